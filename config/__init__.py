"""Not code: what this folder ships inside the agent's package.

pyproject.toml installs this folder as the package `agent.config.shipped`, with its
`profiles/*.yaml` (the shipped sensor profiles) and `schemas/*.json` (the JSON Schemas) as
package data, so that an agent installed from a wheel, without this checkout, finds them
through `importlib.resources`. The example configs here are not packaged. This file only
makes the folder a regular package, which setuptools' editable install needs to map it.
"""
