"""Step 1, facts and gating: the versions found, and every capability with its verdict and why.

Reads ``GET /v1/facts`` only; changes nothing and needs no guest.
"""

from __future__ import annotations

from blockplane.cli.demo.figures import StepOutcome, measured
from blockplane.cli.demo.session import TourSession


def facts_step(tour: TourSession) -> StepOutcome:
    facts = tour.facts()
    qemu, libvirt, accel = facts["qemu"], facts["libvirt"], facts["accel"]
    tour.narrator.say(f"QEMU {qemu['version']} ({qemu.get('package_version') or 'no package'}), "
                      f"libvirt {libvirt['version']} "
                      f"({libvirt.get('package_version') or 'no package'}), "
                      f"{facts['cpus']} host CPUs")
    tour.narrator.say(f"acceleration: {accel['selected']} ({accel['reason']})")
    capabilities: dict[str, dict[str, object]] = facts["capabilities"]
    rows = [(name, "yes" if entry["supported"] else "NO", str(entry.get("needs") or ""),
             str(entry["reason"])) for name, entry in capabilities.items()]
    tour.narrator.rows(("capability", "supported", "needs", "why"), rows)
    supported = [name for name, entry in capabilities.items() if entry["supported"]]
    gated = [name for name in capabilities if name not in supported]
    if gated:
        tour.narrator.note("a capability that is not supported is never asked of QEMU: the "
                           "agent applies the stated fallback and says so in its answer")
    figures = (
        measured("capabilities supported", len(supported), f"of {len(capabilities)}"),
        measured("QEMU", qemu["version"]),
        measured("libvirt", libvirt["version"]),
    )
    title = (f"QEMU {qemu['version']}, libvirt {libvirt['version']}, {accel['selected']}: "
             f"{len(supported)} of {len(capabilities)} capabilities"
             + (f" (not: {', '.join(gated)})" if gated else ""))
    return StepOutcome(title, "versions and the capability matrix with reasons", figures,
                       "capabilities supported")
