#!/usr/bin/env python3
"""The reference pages: Markdown sources here (read on the web), man pages built from them.

    man.py check HEADER DIR   every function HEADER declares has DIR/<name>.3.md, whose SYNOPSIS
                              holds its declaration exactly as the header writes it; no page
                              describes a function the header lacks; every page has the
                              liburing sections in order and SEE ALSO names existing pages;
                              rawblock.3.md names every function.
    man.py roff DIR OUT       OUT/man1/*.1 and OUT/man3/*.3 from DIR/*.md.

The Markdown is a small subset: "# title", "## SECTION", paragraphs, ```c blocks, "- " items,
**bold**, *italic*, `code` and [text](link).
"""

import re
import sys
from pathlib import Path

FUNCTION_SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "RETURN VALUE", "ERRORS", "THREAD SAFETY", "SEE ALSO"]
DECLARATION = re.compile(r"^(?!typedef|#|//|struct|\s)[^;{}()]*?\b(rb_\w+)\((?:[^;{}]*?)\);", re.M)


def header_functions(header: Path) -> dict:
    """name -> the declaration as the header writes it (possibly several lines)."""
    text = header.read_text()
    body = text[text.index('extern "C" {'):]
    return {m.group(1): m.group(0) for m in DECLARATION.finditer(body)}


def sections(md: str) -> list:
    """[(title, text)] of the page's "## " sections, in order."""
    parts = re.split(r"^## +(.+)$", md, flags=re.M)
    return [(parts[i].strip(), parts[i + 1]) for i in range(1, len(parts), 2)]


def code_blocks(text: str) -> list:
    return re.findall(r"^```\w*\n(.*?)^```$", text, flags=re.M | re.S)


def check(header: Path, dir: Path) -> list:
    problems = []
    functions = header_functions(header)
    if len(functions) < 30:
        problems.append(f"{header}: found only {len(functions)} function declarations; the parser is out of date")
    pages = {p.name[: -len(".3.md")]: p for p in dir.glob("*.3.md")}
    for name, decl in functions.items():
        page = pages.get(name)
        if page is None:
            problems.append(f"{name}: declared in {header.name} but {dir}/{name}.3.md does not exist")
            continue
        secs = sections(page.read_text())
        titles = [t for t, _ in secs]
        if titles != FUNCTION_SECTIONS:
            problems.append(f"{page}: sections {titles}, expected {FUNCTION_SECTIONS}")
            continue
        body = dict(secs)
        if not body["NAME"].strip().startswith(f"{name} - "):
            problems.append(f"{page}: NAME must begin '{name} - '")
        blocks = code_blocks(body["SYNOPSIS"])
        want = f"#include <rawblock.h>\n\n{decl}\n"
        if want not in blocks:
            got = blocks[0] if blocks else "(no code block)"
            problems.append(f"{page}: SYNOPSIS differs from {header.name}:\n--- header\n{want}--- page\n{got}")
        for sec in ("DESCRIPTION", "RETURN VALUE", "ERRORS", "THREAD SAFETY"):
            if not body[sec].strip():
                problems.append(f"{page}: {sec} is empty")
    for name, page in pages.items():
        if name not in functions and name != "rawblock":
            problems.append(f"{page}: {name} is not declared in {header.name} (remove the page or the function is gone)")
    overview = dir / "rawblock.3.md"
    if not overview.exists():
        problems.append(f"{overview} does not exist")
    else:
        text = overview.read_text()
        problems += [f"{overview} does not mention {n}" for n in functions if f"{n}(3)" not in text]
    for page in dir.glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+\.md)\)", page.read_text()):
            if not (dir / target).exists():
                problems.append(f"{page}: links to {target}, which does not exist")
    return problems


def inline(s: str) -> str:
    s = s.replace("\\", "\\e")
    s = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", s)
    s = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", s)
    s = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"\\fI\1\\fR", s)
    return s


def line(s: str) -> str:
    """A text line roff will not take for a request."""
    s = s.strip()
    return "\\&" + s if s.startswith((".", "'")) else s


def roff(md: str, name: str, section: str) -> str:
    out = [f'.TH {name} {section} "" "rawblock" "rawblock manual"']
    lines = md.splitlines()
    i = 0
    para = []

    def flush():
        if para:
            out.append(".PP")
            out.extend(line(inline(p)) for p in para)
            para.clear()

    while i < len(lines):
        l = lines[i]
        if l.startswith("# "):  # the page title: .TH says it
            i += 1
            continue
        if l.startswith("## "):
            flush()
            out.append(f".SH {l[3:].strip()}")
        elif l.startswith("```"):
            flush()
            out += [".PP", ".nf", ".ft B" if section == "3" else ".ft CR"]
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                out.append("\\&" + lines[i].replace("\\", "\\e"))
                i += 1
            out += [".ft R", ".fi"]
        elif l.startswith("- "):
            flush()
            item = [l[2:]]
            while i + 1 < len(lines) and lines[i + 1].startswith("  ") and lines[i + 1].strip():
                i += 1
                item.append(lines[i].strip())
            first, _, rest = " ".join(item).partition(": ")
            if first.startswith("**") and rest:
                out += [".TP", line(inline(first)), line(inline(rest))]
            else:
                out += [".IP \\(bu 2", line(inline(" ".join(item)))]
        elif not l.strip():
            flush()
        else:
            para.append(l)
        i += 1
    flush()
    return "\n".join(out) + "\n"


def build(dir: Path, out: Path) -> None:
    for page in sorted(dir.glob("*.[13].md")):
        name, section = page.name[:-3].rsplit(".", 1)
        dest = out / f"man{section}" / f"{name}.{section}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(roff(page.read_text(), name, section))


def main(argv: list) -> int:
    if len(argv) == 4 and argv[1] == "check":
        problems = check(Path(argv[2]), Path(argv[3]))
        for p in problems:
            print(f"man-check: {p}")
        if problems:
            return 1
        print(f"man-check: every function of {argv[2]} has a page whose SYNOPSIS matches it")
        return 0
    if len(argv) == 4 and argv[1] == "roff":
        build(Path(argv[2]), Path(argv[3]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
