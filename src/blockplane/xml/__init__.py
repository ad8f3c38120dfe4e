"""blockplane.xml."""
