"""The stage contract: a build is a loop over small Stage objects sharing a BuildContext."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from edgekit.context import BuildContext


class Stage(ABC):
    """One step of a build. Subclasses set ``name`` and implement :meth:`run`."""

    name: ClassVar[str]
    #: shown while the stage runs
    description: ClassVar[str] = ""

    def applies(self, ctx: BuildContext) -> bool:
        """Whether this stage has work to do for this model and target."""
        return True

    @abstractmethod
    def run(self, ctx: BuildContext) -> None:
        """Do the work, reading and extending ``ctx``."""
