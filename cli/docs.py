"""``fleet docs``: documents generated from the code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from cli.output import JsonOption, command_group, fail, print_json

app = command_group("Documents generated from the code.")


@app.command()
def asyncapi(
    output: str = typer.Option(
        "asyncapi.json",
        "--output",
        "-o",
        help="Where to write the document; - writes it to stdout (and nothing else).",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Write the AsyncAPI 3.0 document (JSON) of the fleet.

    Every service's queues, and the messages each emits.

    Queue and exchange names are those of the configured namespace (FLEET_NAMESPACE).
    """
    from workers.runtime import asyncapi as spec
    from workers.runtime import catalog
    from workers.runtime.settings import get_settings

    document = spec.generate(get_settings(), catalog.load_all())
    text = json.dumps(document, indent=2) + "\n"
    if output == "-":
        sys.stdout.write(text)
        return
    path = Path(output)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        fail(f"cannot write {path}: {error.strerror or error}")
    counts = spec.counts(document)
    if as_json:
        print_json({"output": str(path), **counts})
    else:
        typer.echo(
            f"wrote {path}: AsyncAPI {document['asyncapi']}, {counts['channels']} channels, "
            f"{counts['operations']} operations, {counts['messages']} messages"
        )
