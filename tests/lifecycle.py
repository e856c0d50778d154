"""pulumi-command's `local.Command` lifecycle as the Pulumi engine drives it, for host-tier tests.

What the engine and pulumi-command do with one Command resource (checked against the real
engine, see docs/delivery.md):
- new resource: `create` runs; its stdout is kept in state;
- a change of `triggers`, or `pulumi up --replace <urn>`: replaced, create-before-delete: the
  new resource's `create` runs with the new inputs, then the old resource's `delete` with the old
  inputs; a failed `create` leaves the old resource in place and deletes nothing;
- a change of any other input: `update` runs (or `create` again when no `update` is given),
  with the new inputs; a failed update keeps the old state;
- `update` and `delete` get the last create/update's stdout in PULUMI_COMMAND_STDOUT;
- resource gone from the program: `delete` runs with the inputs in state (no `delete`: nothing
  runs, for either half of a replacement: provider/pkg/provider/local/command.go returns
  before running anything when Delete is nil);
The commands are the exact strings the Delivery component registers, run through `sh -c` from
the project directory, as the provider runs them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

Run = Callable[[str, dict[str, str]], subprocess.CompletedProcess]


@dataclass
class Step:
    """One operation the engine performed, with what the command printed."""

    op: str  # create | update | delete
    proc: subprocess.CompletedProcess


@dataclass
class LocalCommand:
    """One `command.local.Command` resource: its state across `pulumi up`s."""

    run: Run
    inputs: dict | None = None
    stdout: str = ""
    steps: list[Step] = field(default_factory=list)

    def _env(self, inputs: dict, previous: bool) -> dict[str, str]:
        env = dict(inputs.get("environment") or {})
        if previous and self.stdout:
            env["PULUMI_COMMAND_STDOUT"] = self.stdout
        return env

    def _do(self, op: str, inputs: dict, command: str, previous: bool) -> Step:
        step = Step(op, self.run(command, self._env(inputs, previous)))
        self.steps.append(step)
        return step

    def up(self, inputs: dict, replace: bool = False) -> list[Step]:
        """One `pulumi up` of this resource with `inputs` (`replace`: `--replace <urn>`)."""
        if self.inputs is None:
            step = self._do("create", inputs, inputs["create"], previous=False)
            if step.proc.returncode == 0:
                self.inputs, self.stdout = inputs, step.proc.stdout
            return [step]
        if replace or inputs.get("triggers") != self.inputs.get("triggers"):
            created = self._do("create", inputs, inputs["create"], previous=False)
            if created.proc.returncode != 0:
                return [created]
            old_inputs = self.inputs
            if not old_inputs.get("delete"):  # no delete command: nothing runs (pulumi-command)
                self.inputs, self.stdout = inputs, created.proc.stdout
                return [created]
            deleted = self._do("delete", old_inputs, old_inputs["delete"], previous=True)  # the old stdout
            self.inputs, self.stdout = inputs, created.proc.stdout
            return [created, deleted]
        if inputs != self.inputs:
            step = self._do("update", inputs, inputs.get("update") or inputs["create"], previous=True)
            if step.proc.returncode == 0:
                self.inputs, self.stdout = inputs, step.proc.stdout
            return [step]
        return []

    def destroy(self) -> Step:
        """The resource left the program: `delete` with the inputs and stdout in state."""
        if not self.inputs.get("delete"):
            self.inputs = None
            return Step("delete", subprocess.CompletedProcess([], 0, "", ""))
        step = self._do("delete", self.inputs, self.inputs["delete"], previous=True)
        if step.proc.returncode == 0:
            self.inputs = None
        return step
