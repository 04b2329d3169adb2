"""Built-in harness plugins, shipped as the import package ``harness_plugins``.

Each module here is registered through ``[project.entry-points.harness]`` in pyproject.toml,
exactly as a third-party plugin would be; ``harness --disable-plugin NAME`` turns any of them off.
"""
