"""blockplane.runtime: the composition root (the agent that builds and serves the services) and
the event log."""
