"""Schema migrations, in order. Never edit a released entry: append a new one."""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE pools (
            name TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            path TEXT NOT NULL,
            capacity_bytes INTEGER,
            chunk_bytes INTEGER NOT NULL,
            utilization_pct INTEGER NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE vms (
            name TEXT PRIMARY KEY,
            uuid TEXT NOT NULL UNIQUE,
            vcpus INTEGER NOT NULL,
            memory_bytes INTEGER NOT NULL,
            guest TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE volumes (
            pool TEXT NOT NULL REFERENCES pools(name),
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            format TEXT NOT NULL,
            virtual_bytes INTEGER NOT NULL,
            physical_bytes INTEGER NOT NULL,
            thin INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            PRIMARY KEY (pool, name)
        )""",
        """CREATE TABLE disks (
            vm TEXT NOT NULL REFERENCES vms(name) ON DELETE CASCADE,
            target TEXT NOT NULL,
            pool TEXT NOT NULL,
            volume TEXT NOT NULL,
            bus TEXT NOT NULL,
            plan_json TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            PRIMARY KEY (vm, target),
            FOREIGN KEY (pool, volume) REFERENCES volumes(pool, name)
        )""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            type TEXT NOT NULL,
            vm TEXT,
            data_json TEXT NOT NULL
        )""",
        "CREATE INDEX events_by_vm ON events(vm, id)",
        """CREATE TABLE idempotency (
            key TEXT PRIMARY KEY,
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            status INTEGER NOT NULL,
            body TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
    ),
    # Per-disk QoS specs (blockplane.throttle): capacity-scaled limits are recomputed on growth.
    (
        """CREATE TABLE disk_qos (
            vm TEXT NOT NULL REFERENCES vms(name) ON DELETE CASCADE,
            target TEXT NOT NULL,
            mode TEXT NOT NULL,
            spec_json TEXT NOT NULL,
            chain_json TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            per_disk_json TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (vm, target)
        )""",
    ),
    # Thin volume monitor state (blockplane.thin.monitor_store), written before each action.
    (
        """CREATE TABLE thin_monitor (
            pool TEXT NOT NULL,
            volume TEXT NOT NULL,
            vm TEXT NOT NULL REFERENCES vms(name) ON DELETE CASCADE,
            target TEXT NOT NULL,
            path TEXT NOT NULL,
            virtual_bytes INTEGER NOT NULL,
            state TEXT NOT NULL,
            chain_index INTEGER,
            threshold_bytes INTEGER,
            physical_bytes INTEGER NOT NULL,
            pending_physical_bytes INTEGER,
            extends INTEGER NOT NULL DEFAULT 0,
            pauses INTEGER NOT NULL DEFAULT 0,
            refusals INTEGER NOT NULL DEFAULT 0,
            refused INTEGER NOT NULL DEFAULT 0,
            paused INTEGER NOT NULL DEFAULT 0,
            last_extend_latency_s REAL,
            last_extended_at REAL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (pool, volume),
            FOREIGN KEY (pool, volume) REFERENCES volumes(pool, name) ON DELETE CASCADE
        )""",
    ),
    # Backing chains (blockplane.chain): block jobs (state + plan, written before each action),
    # the volume of every chain element blockplane created, and its own snapshot records.
    (
        """CREATE TABLE chain_jobs (
            id TEXT PRIMARY KEY,
            vm TEXT NOT NULL REFERENCES vms(name) ON DELETE CASCADE,
            target TEXT NOT NULL,
            kind TEXT NOT NULL,
            phase TEXT NOT NULL,
            state_json TEXT NOT NULL,
            spec_json TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX chain_jobs_by_phase ON chain_jobs(phase, vm)",
        """CREATE TABLE chain_volumes (
            pool TEXT NOT NULL,
            volume TEXT NOT NULL,
            vm TEXT NOT NULL,
            target TEXT NOT NULL,
            path TEXT NOT NULL,
            state TEXT NOT NULL,
            origin TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (pool, volume),
            FOREIGN KEY (pool, volume) REFERENCES volumes(pool, name) ON DELETE CASCADE
        )""",
        """CREATE TABLE chain_snapshots (
            vm TEXT NOT NULL REFERENCES vms(name) ON DELETE CASCADE,
            name TEXT NOT NULL,
            state TEXT NOT NULL,
            quiesced INTEGER NOT NULL,
            disks_json TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (vm, name)
        )""",
    ),
    # Intents of multi-step disk changes (store/pending.py), for recovery after a crash.
    (
        """CREATE TABLE pending_ops (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            vm TEXT NOT NULL,
            target TEXT NOT NULL,
            data_json TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
    ),
    # Peers (blockplane.migration.peers): other hosts' agents, reached over pinned TLS. The
    # token is kept here only (state.db is 0600) and never shown.
    (
        """CREATE TABLE peers (
            name TEXT PRIMARY KEY,
            api TEXT NOT NULL,
            token TEXT NOT NULL,
            ca_pem TEXT,
            added_at REAL NOT NULL,
            hostname TEXT,
            version TEXT
        )""",
    ),
    # VMs taken under management (adoption/adopt.py): what the domain had when it was adopted
    # (IOThreads blockplane must not use, foreign disks and chain elements it must never write,
    # throttle groups, <iotune>, checkpoints) and whether the domain has since gone.
    (
        """CREATE TABLE adopted_vms (
            vm TEXT PRIMARY KEY REFERENCES vms(name) ON DELETE CASCADE,
            reserved_iothreads_json TEXT NOT NULL,
            foreign_disks_json TEXT NOT NULL,
            foreign_paths_json TEXT NOT NULL,
            report_json TEXT NOT NULL,
            gone_since REAL,
            adopted_at REAL NOT NULL
        )""",
    ),
    # Backups (blockplane.backup): each pull backup's export (socket, per-disk export names,
    # bitmaps and scratch images, its timeout), and every checkpoint's definition, kept so that
    # libvirt's checkpoint metadata can be defined again after it was lost.
    (
        """CREATE TABLE pull_exports (
            job_id TEXT PRIMARY KEY REFERENCES chain_jobs(id) ON DELETE CASCADE,
            vm TEXT NOT NULL,
            record_json TEXT NOT NULL,
            deadline REAL NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE checkpoint_definitions (
            vm TEXT NOT NULL REFERENCES vms(name) ON DELETE CASCADE,
            name TEXT NOT NULL,
            parent TEXT,
            xml TEXT NOT NULL,
            created_at INTEGER,
            recorded_at REAL NOT NULL,
            PRIMARY KEY (vm, name)
        )""",
    ),
    # Live migrations (blockplane.migration): one row per job on each end (``role`` source or
    # destination), its phase and everything it must undo or finish, written before each step.
    (
        """CREATE TABLE migrations (
            id TEXT NOT NULL,
            role TEXT NOT NULL,
            vm TEXT NOT NULL,
            peer TEXT,
            phase TEXT NOT NULL,
            state_json TEXT NOT NULL,
            plan_json TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (id, role)
        )""",
        "CREATE INDEX migrations_by_phase ON migrations(phase, vm)",
    ),
    # Ceph RBD pools (blockplane.storage.rbd_pools): how to reach the cluster, per pool. The
    # cephx key is not here: it lives in a libvirt secret and in the user's keyring file.
    (
        """CREATE TABLE rbd_pools (
            name TEXT PRIMARY KEY REFERENCES pools(name) ON DELETE CASCADE,
            conf TEXT NOT NULL,
            user TEXT NOT NULL,
            keyring TEXT NOT NULL,
            ceph_pool TEXT NOT NULL,
            fsid TEXT NOT NULL,
            secret_uuid TEXT NOT NULL,
            monitors_json TEXT NOT NULL
        )""",
    ),
)
