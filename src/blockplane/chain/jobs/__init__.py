"""blockplane.chain.jobs: block jobs (commit, pull, copy, backup), from request to cleanup."""
