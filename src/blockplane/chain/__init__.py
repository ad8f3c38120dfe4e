"""Backing chains and block jobs.

The pure core (no libvirt, no commands, no I/O):

- ``Chain`` and ``ChainElement`` with the naming convention (positional ``vda[N]`` for users,
  libvirt's node index for libvirt) are ``model.chain``; live domain XML -> ``Chain`` is
  ``xml.backing_chain``;
- ``addressing``: user names and paths -> elements, libvirt names, commit and pull validation;
- ``jobs.state`` and ``jobs.phases``: the persisted job record and its phase machine, restart
  decisions;
- ``jobs.effects``: what the live chain proves about a job that libvirt no longer reports;
- ``jobs.spec``, ``jobs.plans``, ``jobs.backup_plan``: what a job acts on, planned from a request.

The services, which reach libvirt only through ``hypervisor.domain.DomainHandle``:

- ``service``: chain listing with sizes; ``snapshots``: external disk-only snapshots;
- ``jobs.service``: starting jobs and ``job`` requests; ``jobs.driver``: every state change;
  ``jobs.events`` (BLOCK_JOB_2) and ``jobs.reconcile`` (the safety net and restart);
- ``volumes`` and ``jobs.cleanup``: the volumes behind chain elements and their deletion;
- ``jobs.store``: persistence; ``jobs.holds``: what live jobs hold on to;
- ``reconcile``: the package's reconcile step.
"""
