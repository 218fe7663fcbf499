"""Deterministic code-spillover detector: does an answer to a non-coding question hold code?

An answer *spills* when at least one whole line is code: a fenced block, a line (or a
window of consecutive lines) that parses as Python *and* has code structure, or a line
that is clearly shell, SQL or JavaScript. Lines are checked in order and in that
precedence (fence, shell, sql, js, python); the first hit is reported.

Decisions:
- Code words inside a prose sentence are prose ("You can use print() to show text.").
  An inline `span` inside a sentence is prose; a line that is *only* one backticked span
  is judged by its content. A leading ``>>> `` REPL prompt is ignored.
- Arithmetic sentences ("2 + 2 = 4") are prose; an assignment to a name alone on a line
  ("x = 2 + 2") is code, whatever the words ("mood = happy" counts too).
- A line (or block, fenced or not) holding only a JSON/dict/list literal of constants is
  prose: the study sometimes asks for JSON answers. Any other fenced block is code.
- Dialogue lines like "Me: hi" parse as a bare annotation and are prose.
- Block headers (for/while/if/with/try) count alone only if the header itself is code-like
  (a call, attribute, subscript, symbolic comparison, True/False/None); otherwise they need
  a code statement in their body. def/class always count; truncated tails are ignored
  because shorter windows are tried first.
"""

import ast
import json
import re
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

_MAX_WINDOW = 12
_FENCE = "```"
_SENTENCE_END = re.compile(r"[A-Za-z][.!?]$")
_BACKTICKED_LINE = re.compile(r"^(\s*)`([^`]+)`\s*$")
_REPL_PROMPT = re.compile(r"^(\s*)>>> ")

_SHELL_COMMANDS = frozenset(
    "ls cd rm mv cp mkdir rmdir touch chmod chown cat grep find sed awk echo export source "
    "curl wget ssh scp tar unzip zip python python3 node bash sh zsh make kill killall ps "
    "systemctl service crontab dd mount nc ping head tail wc sort xargs tee ln gcc go java "
    "git docker kubectl pip pip3 npm npx yarn brew apt apt-get yum dnf conda gem cargo".split()
)
_SHELL_VERBS = {
    "pip pip3 npm yarn brew apt apt-get yum dnf conda gem cargo": "install uninstall remove update upgrade",
    "git": "clone init add commit push pull checkout status log merge branch rebase diff",
    "docker kubectl": "run build pull push ps exec compose apply get",
}
_VERBS_BY_TOOL = {tool: set(verbs.split()) for tools, verbs in _SHELL_VERBS.items() for tool in tools.split()}
_SHELL_ARG = re.compile(
    r"^(-{1,2}[A-Za-z0-9]|[/~]|\.{1,2}/|\.{1,2}$|\$|&&$|\|\|?$|>>?$|<$|2>&1$|[A-Za-z_]\w*=)"
    r"|://|^[\w.+-]+@[\w.-]+$|^[\w.-]*\w\.[A-Za-z]\w{0,5}$|/$"
)
_WORD_COMPARISONS = (ast.In, ast.NotIn, ast.Is, ast.IsNot)
_CHMOD_MODE = re.compile(r"^([0-7]{3,4}|[ugoa]*[+=-][rwxXst]+)$")

_SQL_STATEMENTS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"^SELECT\s+.+?\s+FROM\s+[\w.\"`\[\]]+",
        r"^INSERT\s+INTO\s+[\w.\"`]+.*\bVALUES\b",
        r"^CREATE\s+(TABLE|DATABASE|INDEX|VIEW)\s+(IF\s+NOT\s+EXISTS\s+)?[\w.\"`]+\s*(\(|$|;)",
        r"^UPDATE\s+[\w.\"`]+\s+SET\s+\w+\s*=",
        r"^DELETE\s+FROM\s+[\w.\"`]+",
        r"^DROP\s+(TABLE|DATABASE|INDEX|VIEW)\s+[\w.\"`]+",
        r"^ALTER\s+TABLE\s+[\w.\"`]+\s+\w+",
    )
)
_SQL_EVIDENCE = re.compile(r";\s*$|\*|=|\(|'|\b(where|join|limit|order by|group by|values)\b", re.IGNORECASE)

_JS_LINES = tuple(
    re.compile(pattern)
    for pattern in (
        r"^(const|let|var)\s+([A-Za-z_$][\w$]*|\{[^}]*\}|\[[^\]]*\])\s*=[^=]",
        r"^(export\s+(default\s+)?)?(async\s+)?function\b\s*\*?\s*[\w$]*\s*\([^)]*\)\s*\{?\s*$",
        r"^(console|document|window)\.[\w$.]+\s*\(.*\)\s*;?\s*$",
        r"^(document|window)\.[\w$.]+\s*=[^=]",
        r"^import\s+.+\s+from\s+['\"]",
        r"^export\s+(default|const|let|function|class)\b",
        r"^(if|for|while|switch)\s*\(.*\)\s*\{\s*$",
        r"^\}\s*(else|catch)\b.*\{\s*$",
        r"=>\s*\{\s*$",
        r"=>.*;\s*$",
    )
)


@dataclass(frozen=True)
class CodeFinding:
    """Where and what the first line of code in an answer is."""

    line: int  # 0-based index of the first line recognised as code
    kind: str  # "fence" | "python" | "shell" | "sql" | "js"
    text: str  # the offending line (stripped)


def find_code(text: str) -> CodeFinding | None:
    """Return the first code finding in `text`, or None when it is prose."""
    raw = text.splitlines()
    lines = [_normalise(line) for line in raw]
    index = 0
    while index < len(lines):
        if lines[index].strip().startswith(_FENCE):
            end = _fence_end(lines, index)
            if not _is_data_literal("\n".join(lines[index + 1 : end])):
                return CodeFinding(index, "fence", raw[index].strip())
            index = end + 1
            continue
        kind = _line_kind(lines, index)
        if kind is not None:
            return CodeFinding(index, kind, raw[index].strip())
        index += 1
    return None


def contains_code(text: str) -> bool:
    """Whether `text` holds at least one whole line of code."""
    return find_code(text) is not None


def spillover_rate(answers: Sequence[str]) -> float:
    """Fraction of `answers` that contain code."""
    if not answers:
        raise ValueError("spillover_rate needs at least one answer")
    return sum(contains_code(answer) for answer in answers) / len(answers)


def _normalise(line: str) -> str:
    """Unwrap a line that is one backticked span and drop a `>>> ` prompt."""
    line = _BACKTICKED_LINE.sub(r"\1\2", line)
    return _REPL_PROMPT.sub(r"\1", line)


def _fence_end(lines: list[str], start: int) -> int:
    """Index of the fence closing the block opened at `start` (len(lines) if unclosed)."""
    for index in range(start + 1, len(lines)):
        if lines[index].strip().startswith(_FENCE):
            return index
    return len(lines)


def _is_data_literal(source: str) -> bool:
    """Whether `source` is a JSON object or array."""
    try:
        return isinstance(json.loads(source), (dict, list))
    except ValueError:
        return False


def _line_kind(lines: list[str], index: int) -> str | None:
    """Kind of code starting at line `index`, or None."""
    stripped = lines[index].strip()
    if not stripped:
        return None
    for kind, check in (("shell", _is_shell), ("sql", _is_sql), ("js", _is_js)):
        if check(stripped):
            return kind
    return "python" if _is_python_at(lines, index) else None


def _is_shell(line: str) -> bool:
    """Whether a stripped line is a shell command."""
    if line.startswith("#!/") or re.match(r"^\$\s+\S", line):
        return True
    if _SENTENCE_END.search(line):
        return False
    words = line.split()
    if words[0] == "sudo":
        words = words[1:]
    if len(words) < 2 or words[0] not in _SHELL_COMMANDS:
        return False
    command, args = words[0], words[1:]
    if args[0] in _VERBS_BY_TOOL.get(command, ()):
        return True
    if command in ("chmod", "chown") and _CHMOD_MODE.match(args[0]):
        return True
    return any(_SHELL_ARG.search(arg) for arg in args)


def _is_sql(line: str) -> bool:
    """Whether a stripped line is an SQL statement."""
    if _SENTENCE_END.search(line) or not any(pattern.match(line) for pattern in _SQL_STATEMENTS):
        return False
    keyword = line.split()[0]
    if keyword.isupper():
        return True
    return keyword.islower() and _SQL_EVIDENCE.search(line) is not None


def _is_js(line: str) -> bool:
    """Whether a stripped line is JavaScript."""
    return any(pattern.search(line) for pattern in _JS_LINES)


def _indent(line: str) -> int:
    """Width of a line's leading whitespace."""
    return len(line) - len(line.lstrip())


def _is_python_at(lines: list[str], index: int) -> bool:
    """Whether a Python statement with code structure starts at line `index`."""
    indent = _indent(lines[index])
    window: list[str] = []
    for line in lines[index : index + _MAX_WINDOW]:
        if window and line.strip() and (_indent(line) < indent or line.strip().startswith(_FENCE)):
            break
        window.append(line)
        if line.strip() and any(_starts_with_code(source) for source in _candidates(window)):
            return True
    return False


def _candidates(window: list[str]) -> Iterator[str]:
    """The dedented window, and, if it ends in a block header, with a `pass` body."""
    source = textwrap.dedent("\n".join(window)).rstrip()
    yield source
    last = source.splitlines()[-1]
    if last.endswith(":"):
        yield f"{source}\n{' ' * (_indent(last) + 4)}pass"


def _starts_with_code(source: str) -> bool:
    """Whether `source` parses and its first statement is code."""
    try:
        with warnings.catch_warnings():  # model text like "1st" makes the parser warn; it is data, not our code
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    lines = [line.encode() for line in source.splitlines()]
    return bool(tree.body) and _is_code_stmt(tree.body[0], lines, nested=False)


def _is_code_stmt(stmt: ast.stmt, lines: list[bytes], nested: bool) -> bool:
    """Whether a statement has code structure (`nested`: inside a block body)."""
    match stmt:
        case ast.Import() | ast.ImportFrom() | ast.FunctionDef() | ast.AsyncFunctionDef() | ast.ClassDef():
            return True
        case ast.Assign(targets=targets):
            return all(_is_target(target) for target in targets)
        case ast.AugAssign(target=target):
            return _is_target(target)
        case ast.AnnAssign(target=target, value=value):
            return value is not None and _is_target(target)
        case ast.Expr(value=ast.Lambda()):
            return True
        case ast.Expr(value=ast.Await(value=value)) | ast.Expr(value=value):
            return _is_tight_call(value, lines)
        case ast.Return(value=value) | ast.Raise(exc=value):
            return nested or (value is not None and _is_codey(value, lines))
        case ast.For() | ast.AsyncFor() | ast.While() | ast.If() | ast.With() | ast.AsyncWith():
            return _is_codey_header(stmt, lines) or _any_code(stmt.body + getattr(stmt, "orelse", []), lines)
        case ast.Try() | ast.TryStar():
            bodies = stmt.body + stmt.orelse + stmt.finalbody
            return _any_code(bodies + [s for handler in stmt.handlers for s in handler.body], lines)
    return False


def _any_code(body: list[ast.stmt], lines: list[bytes]) -> bool:
    """Whether any statement of a block body is code."""
    return any(_is_code_stmt(stmt, lines, nested=True) for stmt in body)


def _is_codey_header(stmt: ast.stmt, lines: list[bytes]) -> bool:
    """Whether a compound statement's header expressions look like code."""
    match stmt:
        case ast.For(iter=expr) | ast.AsyncFor(iter=expr) | ast.While(test=expr) | ast.If(test=expr):
            return _is_codey(expr, lines)
        case ast.With(items=items) | ast.AsyncWith(items=items):
            return any(_is_codey(item.context_expr, lines) for item in items)
    return False


def _is_target(node: ast.expr) -> bool:
    """Whether an assignment target is a name, attribute, subscript or unpacking of those."""
    match node:
        case ast.Name() | ast.Attribute() | ast.Subscript():
            return True
        case ast.Starred(value=value):
            return _is_target(value)
        case ast.Tuple(elts=elts) | ast.List(elts=elts):
            return all(_is_target(elt) for elt in elts)
    return False


def _is_tight(node: ast.expr, follower: bytes, lines: list[bytes]) -> bool:
    """Whether `follower` comes right after `node` in the source (as in `f(` or `a[`)."""
    end = node.end_col_offset or 0
    return lines[(node.end_lineno or 1) - 1][end : end + 1] == follower


def _is_tight_call(node: ast.expr, lines: list[bytes]) -> bool:
    """Whether `node` is a call `f(...)`/`obj.attr(...)` with no space before the paren."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, (ast.Name, ast.Attribute, ast.Call, ast.Subscript))
        and _is_tight(node.func, b"(", lines)
    )


def _is_codey(expr: ast.expr, lines: list[bytes]) -> bool:
    """Whether an expression holds a call, attribute, subscript, lambda, symbolic compare or singleton."""
    for node in ast.walk(expr):
        match node:
            case ast.Attribute() | ast.Lambda():
                return True
            case ast.Call() if _is_tight_call(node, lines):
                return True
            case ast.Subscript(value=value) if _is_tight(value, b"[", lines):
                return True
            case ast.Compare(ops=ops) if not all(isinstance(op, _WORD_COMPARISONS) for op in ops):
                return True
            case ast.Constant(value=value) if value is None or isinstance(value, bool):
                return True
    return False
