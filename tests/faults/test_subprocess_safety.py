"""No user input reaches a shell: every subprocess call in ``src/`` takes an argument list.

An AST check, not a regex. For every module it resolves imports (``import subprocess as sp``,
``from subprocess import run``) and then, for every call:

- ``shell=`` anything but the literal ``False`` is refused, whatever the callee;
- the shell-only APIs (``os.system``, ``os.popen``, ``subprocess.getoutput``,
  ``subprocess.getstatusoutput``, ``asyncio.create_subprocess_shell``) are refused;
- ``subprocess.run/Popen/call/check_call/check_output`` and the project's command runners
  (``<...runner>.run(argv)``, ``run_qemu_img(argv)``) must be given something that is provably
  an argument list: a list/tuple display or comprehension, ``list()``/``tuple()``, a call of a
  function whose return annotation is a list/tuple/Sequence (defined in the module, or in
  ``src/`` under that name: an imported helper or a method, where every definition of the name
  must be so annotated), or a name every binding of which is one of those (or a parameter
  annotated so). A string, an f-string, ``%``/``+`` on strings or
  ``.format()`` is refused, and so is anything the check cannot prove.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "blockplane"
SHELL_ONLY = {
    ("os", "system"),
    ("os", "popen"),
    ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"),
    ("asyncio", "create_subprocess_shell"),
}
LIST_SINKS = {
    ("subprocess", name) for name in ("run", "Popen", "call", "check_call", "check_output")
}
SEQUENCE_TYPES = {"list", "tuple", "Sequence", "List", "Tuple"}


@dataclass
class Findings:
    sinks: int = 0
    violations: list[str] = field(default_factory=list)


def _imports(tree: ast.Module) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    modules: dict[str, str] = {}
    names: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                modules[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = (node.module, alias.name)
    return modules, names


def _callee(
    call: ast.Call, modules: dict[str, str], names: dict[str, tuple[str, str]]
) -> tuple[str, str] | None:
    function = call.func
    if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name):
        module = modules.get(function.value.id)
        if module is not None:
            return module, function.attr
    if isinstance(function, ast.Name) and function.id in names:
        return names[function.id]
    return None


def _is_runner_call(call: ast.Call) -> bool:
    function = call.func
    if isinstance(function, ast.Name):
        return function.id == "run_qemu_img"
    if not isinstance(function, ast.Attribute) or function.attr != "run" or not call.args:
        return False
    receiver = function.value
    name = receiver.attr if isinstance(receiver, ast.Attribute) else getattr(receiver, "id", "")
    return name.endswith("runner") or name == "run"


def _annotation_is_sequence(annotation: ast.expr | None) -> bool:
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        annotation = ast.parse(annotation.value, mode="eval").body
    if isinstance(annotation, ast.Subscript):
        annotation = annotation.value
    if isinstance(annotation, ast.Attribute):
        return annotation.attr in SEQUENCE_TYPES
    return isinstance(annotation, ast.Name) and annotation.id in SEQUENCE_TYPES


class Scope:
    """What a name or a call can be shown to hold, inside one function (or the module)."""

    def __init__(self, node: ast.AST, functions: dict[str, ast.FunctionDef],
                 everywhere: dict[str, list[ast.FunctionDef]] | None = None) -> None:
        self.functions = functions
        self.everywhere = everywhere or {}
        self.bindings: dict[str, list[ast.expr]] = {}
        self.parameters: dict[str, ast.expr | None] = {}
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = node.args
            for argument in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
                self.parameters[argument.arg] = argument.annotation
        for child in ast.walk(node):
            if isinstance(child, ast.Assign):
                for target in child.targets:
                    if isinstance(target, ast.Name):
                        self.bindings.setdefault(target.id, []).append(child.value)
            elif isinstance(child, ast.AnnAssign | ast.AugAssign) and isinstance(
                child.target, ast.Name
            ) and child.value is not None:
                self.bindings.setdefault(child.target.id, []).append(child.value)

    def is_argument_list(self, expression: ast.expr, depth: int = 0) -> bool:
        if depth > 8:
            return False
        if isinstance(expression, ast.List | ast.Tuple | ast.ListComp):
            return True
        if isinstance(expression, ast.BinOp) and isinstance(expression.op, ast.Add):
            return self.is_argument_list(expression.left, depth + 1) and self.is_argument_list(
                expression.right, depth + 1
            )
        if isinstance(expression, ast.Call):
            function = expression.func
            if isinstance(function, ast.Name):
                if function.id in ("list", "tuple", "sorted"):
                    return True
                defined = self.functions.get(function.id)
                if defined is not None:
                    return _annotation_is_sequence(defined.returns)
                return self._returns_a_sequence_everywhere(function.id)
            if isinstance(function, ast.Attribute):
                return self._returns_a_sequence_everywhere(function.attr)
            return False
        if isinstance(expression, ast.Name):
            if expression.id in self.parameters and not self.bindings.get(expression.id):
                return _annotation_is_sequence(self.parameters[expression.id])
            values = self.bindings.get(expression.id, [])
            return bool(values) and all(self.is_argument_list(v, depth + 1) for v in values)
        return False

    def _returns_a_sequence_everywhere(self, name: str) -> bool:
        definitions = self.everywhere.get(name, [])
        return bool(definitions) and all(
            _annotation_is_sequence(defined.returns) for defined in definitions)


def functions_in(files: list[Path]) -> dict[str, list[ast.FunctionDef]]:
    """Every function and method defined in ``files``, by name."""
    found: dict[str, list[ast.FunctionDef]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                found.setdefault(node.name, []).append(node)
    return found


def check_source(source: str, label: str,
                 everywhere: dict[str, list[ast.FunctionDef]] | None = None) -> Findings:
    tree = ast.parse(source)
    modules, names = _imports(tree)
    functions = {
        node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
    }
    findings = Findings()
    scopes: list[ast.AST] = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    seen: set[int] = set()
    for scope_node in [*reversed(scopes), tree]:  # innermost first
        scope = Scope(scope_node, functions, everywhere)
        for call in ast.walk(scope_node):
            if not isinstance(call, ast.Call) or id(call) in seen:
                continue
            seen.add(id(call))
            where = f"{label}:{call.lineno}"
            for keyword in call.keywords:
                if keyword.arg == "shell" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    findings.violations.append(f"{where}: shell= is not the literal False")
            callee = _callee(call, modules, names)
            if callee in SHELL_ONLY:
                findings.violations.append(f"{where}: {'.'.join(callee)} runs a shell")
                continue
            if callee not in LIST_SINKS and not _is_runner_call(call):
                continue
            findings.sinks += 1
            argv = call.args[0] if call.args else next(
                (k.value for k in call.keywords if k.arg == "args"), None
            )
            if argv is None or not scope.is_argument_list(argv):
                shown = ast.unparse(argv) if argv is not None else "nothing"
                findings.violations.append(f"{where}: not provably an argument list: {shown}")
    return findings


def test_every_subprocess_call_takes_an_argument_list() -> None:
    total = Findings()
    files = sorted(SRC.rglob("*.py"))
    everywhere = functions_in(files)
    for path in files:
        found = check_source(path.read_text(), str(path.relative_to(SRC.parent)), everywhere)
        total.sinks += found.sinks
        total.violations += found.violations
    print(f"\n{total.sinks} subprocess/runner calls in {len(files)} modules, all argument lists")
    assert total.violations == []
    assert total.sinks >= 10  # the check found the calls it is meant to check


def test_the_check_catches_shells_and_strings() -> None:
    bad = textwrap.dedent(
        """
        import os
        import subprocess as sp
        from subprocess import check_output

        def f(name: str, argv: list[str], line: str) -> None:
            sp.run(argv, shell=True)
            sp.run("ls " + name)
            sp.Popen(f"ls {name}")
            check_output("ls %s" % name)
            sp.call("ls {}".format(name))
            sp.run(line)
            command = "ls"
            sp.run(command)
            os.system("ls")
            os.popen(name)
            self_runner.run("losetup -a")

        def g(argv: list[str]) -> None:
            sp.run(argv)
            sp.run(["ls", "-l"])
            sp.run(tuple(argv))
        """
    )
    found = check_source(bad, "bad.py")
    lines = sorted(int(violation.split(":")[1]) for violation in found.violations)
    assert lines == [7, 8, 9, 10, 11, 12, 14, 15, 16, 17], found.violations


def test_a_helper_is_trusted_only_if_every_definition_of_its_name_returns_a_list() -> None:
    helpers = ast.parse(textwrap.dedent(
        """
        def argv_of(tool: str) -> list[str]: ...
        def line_of(tool: str) -> str: ...
        class A:
            def command(self) -> list[str]: ...
        class B:
            def command(self) -> str: ...
        """
    ))
    everywhere: dict[str, list[ast.FunctionDef]] = {}
    for node in ast.walk(helpers):
        if isinstance(node, ast.FunctionDef):
            everywhere.setdefault(node.name, []).append(node)
    source = textwrap.dedent(
        """
        import subprocess
        from helpers import argv_of, line_of

        def f(runner: object) -> None:
            subprocess.run(argv_of("ls"))
            subprocess.run(line_of("ls"))
            subprocess.run(runner.command())
        """
    )
    found = check_source(source, "uses.py", everywhere)
    lines = sorted(int(violation.split(":")[1]) for violation in found.violations)
    assert lines == [7, 8], found.violations
