"""Taking a platform's VM under management and giving it back: adopt, release, and their wiring.

Above chain/ because adopting a VM also adopts its block jobs and checkpoints."""
