"""Backing chains and block jobs.

The pure core (no libvirt, no commands, no I/O):

- ``model``: ``Chain`` and ``ChainElement``, and the naming convention (positional ``vda[N]`` for
  users, libvirt's node index for libvirt);
- ``parse``: live domain XML -> ``Chain``;
- ``addressing``: user names and paths -> elements, libvirt names, commit and pull validation;
- ``jobs`` and ``phases``: the persisted job record and its phase machine, restart decisions;
- ``effects``: what the live chain proves about a job that libvirt no longer reports;
- ``job_spec``, ``job_plans``, ``backup_plan``: what a job acts on, planned from a request.

The services, which reach libvirt only through ``hypervisor.domain.DomainHandle``:

- ``service``: chain listing with sizes; ``snapshots``: external disk-only snapshots;
- ``jobs_service``: starting jobs and ``job`` requests; ``job_driver``: every state change;
  ``job_events`` (BLOCK_JOB_2) and ``job_reconcile`` (the safety net and restart);
- ``volumes`` and ``job_cleanup``: the volumes behind chain elements and their deletion;
- ``job_store``: persistence; ``wiring``: the composition the agent builds.
"""
