"""The state model's applications: register, update, unregister, look up."""

from __future__ import annotations

from . import _msgs as msgs
from ._records import (
    DEFAULT_DELAY_RELEASE,
    DEFAULT_MAX_INSTANCES,
    SESSION_OPEN,
    AppRecord,
    AppSpec,
    ResultError,
    StateError,
    now_ms,
)
from ._rules import (
    check_app_spec,
    validate_app_name,
)
from ._state_core import StateCore


class Applications(StateCore):
    """The state model's applications: register, update, unregister, look up."""

    # -- applications ---------------------------------------------------------------------------

    def register_application(self, name: str, spec: AppSpec | None) -> None:
        """RegisterApplication.

        Raises:
            StateError: INVALID_ARGUMENT for a missing spec, a bad schema or working_directory.
            ResultError: bad name or duplicate (upstream's Result{-1}).
        """
        spec = check_app_spec(spec)
        validate_app_name(name)
        with self._lock:
            if name in self._apps:
                raise ResultError("ALREADY_EXISTS", msgs.APP_EXISTS.format(name=name))
            self._apps[name] = self._app_from_spec(name, spec, shim=spec.shim, created=now_ms())
            self._bump()

    @staticmethod
    def _app_from_spec(name: str, spec: AppSpec, *, shim: int, created: int) -> AppRecord:
        schema = spec.schema or (None, None, None)
        return AppRecord(
            name=name,
            shim=shim,
            description=spec.description,
            labels=list(spec.labels),
            image=spec.image,
            command=spec.command,
            arguments=list(spec.arguments),
            environments=dict(spec.environments),
            working_directory=spec.working_directory or None,
            max_instances=DEFAULT_MAX_INSTANCES if spec.max_instances is None else spec.max_instances,
            delay_release=DEFAULT_DELAY_RELEASE if spec.delay_release is None else spec.delay_release,
            schema_input=schema[0],
            schema_output=schema[1],
            schema_common_data=schema[2],
            url=spec.url,
            installer=spec.installer,
            creation_time=created,
            has_schema=spec.schema is not None,
        )

    def _app_has_open_sessions(self, name: str) -> bool:
        return any(s.rec.application == name and s.rec.state == SESSION_OPEN for s in self._sessions.values())

    def update_application(self, name: str, spec: AppSpec | None) -> None:
        """UpdateApplication: replaces everything but the shim and creation time.

        Raises:
            StateError: as :meth:`register_application` for the pre-checks.
            ResultError: bad name, unknown application, or open sessions use it.
        """
        spec = check_app_spec(spec)
        validate_app_name(name)
        with self._lock:
            old = self._apps.get(name)
            if old is None:
                raise ResultError("NOT_FOUND", msgs.APP_NOT_FOUND.format(name=name))
            if self._app_has_open_sessions(name):
                raise ResultError("INVALID_ARGUMENT", msgs.APP_UPDATE_OPEN.format(name=name))
            new = self._app_from_spec(name, spec, shim=old.shim, created=old.creation_time)
            new.version = old.version + 1
            self._apps[name] = new
            self._bump()

    def unregister_application(self, name: str) -> None:
        """UnregisterApplication: also forgets every (closed) session of the application.

        Raises:
            ResultError: open sessions use it, or it is unknown.
        """
        with self._lock:
            if self._app_has_open_sessions(name):
                raise ResultError("INVALID_ARGUMENT", msgs.APP_UNREGISTER_OPEN.format(name=name))
            if self._apps.pop(name, None) is None:
                raise ResultError("NOT_FOUND", msgs.APP_UNREGISTER_UNKNOWN.format(name=name))
            for sid in [sid for sid, s in self._sessions.items() if s.rec.application == name]:
                gone = self._sessions.pop(sid)
                gone.changed.notify_all()
                gone.notify_watchers()  # their watchers end silently
            self._bump()

    def get_application(self, name: str) -> AppRecord:
        """GetApplication.

        Raises:
            StateError: NOT_FOUND for an unknown name.
        """
        with self._lock:
            app = self._apps.get(name)
            if app is None:
                raise StateError("NOT_FOUND", msgs.APP_NOT_FOUND.format(name=name))
            return app.copy()

    def list_applications(self) -> list[AppRecord]:
        """ListApplication: every application, in registration order."""
        with self._lock:
            return [a.copy() for a in self._apps.values()]
