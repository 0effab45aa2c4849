"""Reference pages made from the code, so that they cannot drift from it.

``pgjobs-commands``
    every ``pgjobs_*`` management command: its help and its flags, read from the
    command's own argument parser.
``pgjobs-checks``
    every system check id, from ``pgjobs.checks.CATALOGUE``.
``pgjobs-options BackendClass``
    the ``OPTIONS`` keys a backend accepts (``option_names``).
"""

import pkgutil

from django.core.management import load_command_class
from django.utils.module_loading import import_string
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective


def _command_names():
    import pgjobs.management.commands as package

    return sorted(
        info.name
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    )


def _rst_literal(text):
    return "``" + text.replace("`", "'") + "``"


class CommandsDirective(SphinxDirective):
    """One section per management command, from its parser."""

    def run(self):
        lines = []
        for name in _command_names():
            command = load_command_class("pgjobs", name)
            parser = command.create_parser("manage.py", name)
            lines += [name, "-" * len(name), ""]
            lines += [str(command.help).strip(), ""]
            lines += [".. code-block:: text", ""]
            lines += ["   " + line for line in parser.format_usage().strip().splitlines()]
            lines += [""]
            own = [
                action
                for action in parser._actions
                if action.dest not in _DJANGO_COMMON and action.help != "==SUPPRESS=="
            ]
            if own:
                lines += [".. list-table::", "   :header-rows: 1", "   :widths: 30 70", ""]
                lines += ["   * - option", "     - meaning"]
                for action in own:
                    flags = ", ".join(action.option_strings) or action.dest
                    if action.metavar and action.option_strings:
                        flags += f" {action.metavar}"
                    meaning = (action.help or "").replace("%(default)s", str(action.default))
                    meaning = meaning.replace("%%", "%")
                    if action.default not in (None, False, "==SUPPRESS==") and (
                        "default" not in meaning.lower()
                    ):
                        meaning += f" (default: {action.default})"
                    lines += [f"   * - {_rst_literal(flags)}", f"     - {meaning or '-'}"]
                lines += [""]
            lines += [
                "Django's common options (``--settings``, ``--pythonpath``, ``--traceback``, "
                "``--no-color``, ``--force-color``, ``-v``) apply too.",
                "",
            ]
        return self._parse(lines)

    def _parse(self, lines):
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(StringList(lines, source="pgjobs-commands"), 0, node)
        return node.children


_DJANGO_COMMON = {
    "help",
    "version",
    "verbosity",
    "settings",
    "pythonpath",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
}


class ChecksDirective(SphinxDirective):
    """A table of every check id and what it means."""

    def run(self):
        from pgjobs.checks import CATALOGUE

        table = nodes.table()
        group = nodes.tgroup(cols=2)
        table += group
        group += nodes.colspec(colwidth=20)
        group += nodes.colspec(colwidth=80)
        head = nodes.thead()
        group += head
        head += self._row("id", "meaning", header=True)
        body = nodes.tbody()
        group += body
        for check_id in sorted(CATALOGUE):
            body += self._row(check_id, CATALOGUE[check_id], anchor=check_id)
        return [table]

    def _row(self, first, second, header=False, anchor=None):
        row = nodes.row()
        for i, text in enumerate((first, second)):
            entry = nodes.entry()
            paragraph = nodes.paragraph()
            paragraph += nodes.literal(text=text) if i == 0 and not header else nodes.Text(text)
            if anchor and i == 0:
                paragraph["ids"].append(nodes.make_id(anchor))
            entry += paragraph
            row += entry
        return row


class OptionsDirective(SphinxDirective):
    """The OPTIONS keys a backend class accepts."""

    required_arguments = 1

    def run(self):
        backend = import_string(self.arguments[0])
        names = sorted(backend.option_names or ())
        paragraph = nodes.paragraph()
        paragraph += nodes.Text(f"{backend.__name__} accepts: ")
        for i, name in enumerate(names):
            if i:
                paragraph += nodes.Text(", ")
            paragraph += nodes.literal(text=name)
        paragraph += nodes.Text(".")
        return [paragraph]


def setup(app):
    app.add_directive("pgjobs-commands", CommandsDirective)
    app.add_directive("pgjobs-checks", ChecksDirective)
    app.add_directive("pgjobs-options", OptionsDirective)
    return {"version": "1", "parallel_read_safe": True}
