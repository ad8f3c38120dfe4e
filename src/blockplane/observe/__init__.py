"""blockplane.observe: what operators see of a full host.

``limits`` (domain XML -> effective
per-disk limits, pure), ``rates`` (two samples -> per-second rates, pure), ``top`` (the
``blockplane top`` frame, one bulk stats call per refresh), ``collector`` (per-disk series for
``/v1/metrics`` at scrape time), ``reconcile`` (the record of each reconcile pass) and
``confirm`` (the reconcile step that checks IOThread plans and thin thresholds against libvirt).
Observes only: must not change a domain, a volume or the store.
"""
