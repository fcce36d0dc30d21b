"""The web console at /console (served by ``fleet api``): server-rendered pages over the
same library functions as the CLI. ``routes.router`` is what the app mounts."""
