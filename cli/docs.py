"""``fleet docs``: documents generated from the code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from cli.output import JsonOption, fail, print_json

app = typer.Typer(help="Documents generated from the code.", no_args_is_help=True)


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
    """The AsyncAPI 3.0 document (JSON) of every service's queues and of the messages it emits.

    Queue and exchange names are those of the configured namespace (FLEET_NAMESPACE).
    """
    # Imported here: FastStream's specification machinery would slow down every `fleet` call.
    from workers import asyncapi as spec
    from workers import services
    from workers.settings import get_settings

    document = spec.generate(get_settings(), services.load_all())
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
