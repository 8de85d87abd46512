"""Class names: what may be one, and the `labels.txt` written next to an exported model.

`labels.txt` is one class name per line, line i naming output i of the model. A name with a line
break splits into two labels and shifts every later one; NUL and other control characters break
the C/Java readers on devices; `/` cannot be a folder name and hints at a path trick. Such names are
refused (not escaped): an escaped name would no longer match the folder it came from.
Torch-free: the export stage and the data loaders both use it.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence

from ..errors import UserError

MAX_CLASS_NAME_LENGTH = 255  # a folder name cannot be longer on any common filesystem


def shown(path: object) -> str:
    """A file name as it may appear in a one-line message: quoted and escaped if it holds control
    characters (a file named "a\nb.png" must not split an error into two lines)."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def class_name_problem(name: str) -> str | None:
    """Why `name` cannot be a class name (None: it can)."""
    if not name or not name.strip():
        return "is empty or only white space"
    if len(name) > MAX_CLASS_NAME_LENGTH:
        return f"is {len(name)} characters long (at most {MAX_CLASS_NAME_LENGTH})"
    for char in name:
        # Category C: control (newline, NUL, ESC...), format (zero-width, bidi overrides),
        # surrogates (bytes that are not UTF-8, decoded with surrogateescape), unassigned.
        if unicodedata.category(char).startswith("C"):
            return f"contains the control character {char!r}"
        if char in "/\\":
            return f"contains {char!r}"
    return None


def check_class_names(names: Sequence[str], where: str) -> None:
    """Raise one UserError naming the first bad class name and where it came from."""
    for name in names:
        problem = class_name_problem(name)
        if problem:
            raise UserError(
                f"{where}: class folder {name!r} {problem}; rename the folder to printable characters "
                "(class names become lines of labels.txt)"
            )
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise UserError(f"{where}: class name {duplicates[0]!r} appears twice; give every class its own name")


def labels_text(names: Sequence[str], num_outputs: int | None = None) -> str:
    """The content of `labels.txt`, after checking every name and that there is one per model output."""
    check_class_names(names, "labels.txt")
    if num_outputs is not None and len(names) != num_outputs:
        raise UserError(
            f"labels.txt: the data has {len(names)} classes but the model has {num_outputs} outputs; "
            f"remove model.num_classes from the recipe (it defaults to the data's classes) or set it to {len(names)}"
        )
    return "".join(f"{name}\n" for name in names)
