"""A small data-driven test runner in the style of cockroachdb/datadriven.

Owns: parsing test files made of blocks

    command arg key=value key=(a,b,c)
    ----
    expected output

(one blank line between blocks; ``#`` lines outside blocks are comments),
running each command through a callback, comparing the output, and rewriting
the expected outputs in place when asked to.  Expected outputs must not
contain blank lines; an empty output is written as ``ok``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CmdArg:
    key: str
    vals: list[str] = field(default_factory=list)


@dataclass
class TestData:
    """One block: the command line(s), parsed arguments and expected output."""

    pos: str
    cmd: str
    args: list[CmdArg]
    input_lines: list[str]
    expected: str

    def arg(self, key: str) -> CmdArg | None:
        for a in self.args:
            if a.key == key:
                return a
        return None

    def positional(self) -> list[str]:
        return [a.key for a in self.args if not a.vals]


def parse_args(line: str) -> tuple[str, list[CmdArg]]:
    """Split ``cmd a b=c d=(1,2)`` into the command and its arguments."""
    tokens: list[str] = []
    cur = ""
    depth = 0
    for ch in line.strip():
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch.isspace() and depth == 0:
            if cur:
                tokens.append(cur)
                cur = ""
        else:
            cur += ch
    if cur:
        tokens.append(cur)
    if depth != 0 or not tokens:
        raise ValueError(f"malformed command line: {line!r}")
    args: list[CmdArg] = []
    for tok in tokens[1:]:
        if "=" in tok:
            k, v = tok.split("=", 1)
            if v.startswith("(") and v.endswith(")"):
                inner = v[1:-1]
                vals = [x.strip() for x in inner.split(",") if x.strip()]
            else:
                vals = [v]
            args.append(CmdArg(k, vals))
        else:
            args.append(CmdArg(tok))
    return tokens[0], args


@dataclass
class _Block:
    start: int  # first line of the command
    sep: int  # the ---- line
    end: int  # first line after the expected output
    data: TestData


def _parse(path: Path, lines: list[str]) -> list[_Block]:
    blocks: list[_Block] = []
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        start = i
        cmd_lines: list[str] = []
        while i < n and lines[i].strip() != "----":
            if not lines[i].strip():
                raise ValueError(f"{path}:{i + 1}: blank line before ----")
            cmd_lines.append(lines[i])
            i += 1
        if i >= n:
            raise ValueError(f"{path}:{start + 1}: missing ---- after command")
        sep = i
        i += 1
        out: list[str] = []
        while i < n and lines[i].strip():
            out.append(lines[i])
            i += 1
        cmd, args = parse_args(cmd_lines[0])
        blocks.append(
            _Block(
                start,
                sep,
                i,
                TestData(f"{path.name}:{start + 1}", cmd, args, cmd_lines[1:], "\n".join(out)),
            )
        )
    return blocks


def _normalize(out: str) -> str:
    lines = [ln.rstrip() for ln in out.strip("\n").split("\n")]
    lines = [ln for ln in lines if ln]
    return "\n".join(lines) if lines else "ok"


def run_test(path: Path, run: Callable[[TestData], str], rewrite: bool) -> None:
    """Run every block of ``path``; on mismatch raise AssertionError (or rewrite)."""
    lines = path.read_text().split("\n")
    blocks = _parse(path, lines)
    outputs: list[str] = []
    for b in blocks:
        actual = _normalize(run(b.data))
        outputs.append(actual)
        if not rewrite and actual != b.data.expected:
            raise AssertionError(
                f"{b.data.pos}: output mismatch for {lines[b.start]!r}\n"
                f"--- expected\n{b.data.expected}\n--- actual\n{actual}\n"
                "(rerun with RAFT_REWRITE=1 to regenerate, then review the diff)"
            )
    if rewrite:
        new: list[str] = []
        prev = 0
        for b, out in zip(blocks, outputs, strict=True):
            new.extend(lines[prev : b.sep + 1])
            new.extend(out.split("\n"))
            prev = b.end
        new.extend(lines[prev:])
        path.write_text("\n".join(new))
