"""``/v1/jobs`` answers block jobs and migrations together: a job is a ``JobView`` or, of kind
``migrate``, a ``MigrationJobView``. The response model of one such answer (``JOB_RESPONSE``)
and the CLI's decoder of one (``JOB_ANSWER``), both told apart by ``kind``. Holds no policy.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag, TypeAdapter

from blockplane.api.models import response_model
from blockplane.chain.jobs.views import JobView
from blockplane.migration.views import MigrationJobView

AnyJob = JobView | MigrationJobView


def _kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return "migrate" if kind == "migrate" else "block"


JOB_RESPONSE: Any = Annotated[
    Union[  # noqa: UP007 (the members are values, not types, for the type checker)
        Annotated[response_model(JobView), Tag("block")],
        Annotated[response_model(MigrationJobView), Tag("migrate")],
    ],
    Discriminator(_kind),
]

JOB_ANSWER: TypeAdapter[AnyJob] = TypeAdapter(
    Annotated[
        Union[Annotated[JobView, Tag("block")], Annotated[MigrationJobView, Tag("migrate")]],  # noqa: UP007
        Discriminator(_kind),
    ]
)
