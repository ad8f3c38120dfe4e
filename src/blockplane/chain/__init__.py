"""Backing chains and block jobs: the pure core.

- ``model``: ``Chain`` and ``ChainElement``, and the naming convention (positional ``vda[N]`` for
  users, libvirt's node index for libvirt);
- ``parse``: live domain XML -> ``Chain``;
- ``addressing``: user names and paths -> elements, libvirt names, commit and pull validation;
- ``jobs`` and ``phases``: the persisted job record and its phase machine, restart decisions;
- ``effects``: what the live chain proves about a job that libvirt no longer reports.

Nothing here imports libvirt, runs commands or does I/O; the chain service wires it to the
hypervisor adapter and the store.
"""
