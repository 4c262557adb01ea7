"""The official flamepy SDK against the same fake, through the environment (flame_env)."""

from __future__ import annotations

import json

import flamepy


def test_flmping_with_the_sdk(flame_env):
    assert "flmping" in {app.name for app in flamepy.list_applications()}
    session = flamepy.create_session("flmping")
    try:
        reply = json.loads(session.invoke(json.dumps({}).encode()))
    finally:
        session.close()
    assert reply["message"].startswith("Completed on <")
