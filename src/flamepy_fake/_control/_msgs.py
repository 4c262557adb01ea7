"""Every text the fake session manager sends to a client, in one place.

The texts reproduce what the released Flame v0.6.0 session manager (filesystem storage engine)
sends, as catalogued in ``shared/reference/session-manager.md`` and corrected by
``shared/reference/v0.6.0.md`` (section 4), typos included. Angle brackets in a text are literal,
as upstream writes them (``session <{id}>``); placeholders are ``{name}`` only: clients match on
substrings such as "not open", "spec mismatch" or "failed to bind session", so a reworded
message is a behaviour change. Format placeholders are named after what they hold.
"""

from __future__ import annotations

# -- os error text that upstream's filesystem engine appends to "not found" messages --------------
ENOENT = "No such file or directory (os error 2)"

# -- applications (Result-wrapped unless noted) ----------------------------------------------------
APP_SPEC_MISSING = "applilcation spec is missed"  # INVALID_ARGUMENT status; the typo is upstream's
APP_SCHEMA_INVALID = "invalid {kind} schema: {error}"  # INVALID_ARGUMENT status
APP_SCHEMA_KINDS = ("input", "output", "common data")
APP_WORKDIR_NOT_ABSOLUTE = "working_directory must be an absolute path, got: {path}"  # INVALID_ARGUMENT
APP_NAME_EMPTY = "application name cannot be empty"
APP_NAME_TOO_LONG = "application name exceeds maximum length of {limit} characters"
APP_NAME_TRAVERSAL = "application name contains invalid characters (path traversal): {name}"
APP_NAME_BAD_START = "application name cannot start with '.' or '-': {name}"
APP_NAME_BAD_CHARS = (
    "application name contains invalid characters (only alphanumeric, '-', '_', '.' allowed): {name}"
)
APP_EXISTS = "Application '{name}' already exists"
APP_UNREGISTER_OPEN = "Cannot unregister application '{name}': has open sessions"
APP_UNREGISTER_UNKNOWN = "Failed to delete application '{name}': " + ENOENT
APP_UPDATE_OPEN = "Cannot update application '{name}': has open sessions"
APP_NOT_FOUND = "Application {name} not found: " + ENOENT  # also the GetApplication NOT_FOUND status
APP_NOT_ENABLED = "Application {name} is not enabled"

# -- sessions --------------------------------------------------------------------------------------
SESSION_SPEC_MISSING = "session spec"  # CreateSession without a spec, and CreateTask without a task
SESSION_EXISTS = "Session '{id}' already exists"
# batch_size alignment (v0.6.0), checked before anything but the missing spec.
BATCH_MIN_MISALIGNED = "min_instances ({min}) must be 0 or a multiple of batch_size ({batch})"
BATCH_MAX_MISALIGNED = "max_instances ({max}) must be a multiple of batch_size ({batch})"
SESSION_SPEC_MISMATCH = "session <{id}> spec mismatch: {field} differs (expected {expected}, got {got})"
SESSION_NOT_OPEN = "Session {id} is not open"
SESSION_OPEN_NOT_FOUND = "Session {id} not found"
SESSION_CACHE_NOT_FOUND = "session <{id}>"  # CloseSession and DeleteSession
SESSION_RUNNING_TASKS = "Cannot close session with running tasks"
SESSION_DELETE_OPEN = "Cannot delete open session"
SESSION_DELETE_NON_TERMINAL = "Cannot delete session with non-terminal tasks"
# GetSession, ListTask and GetTask answer NOT_FOUND with the bare session id (or task id).

# Rust debug forms used by the spec-mismatch message.
RUST_NONE = "None"
RUST_SOME = "Some({value})"
RUST_RESREQ = "ResourceRequirement {{ cpu: {cpu}, memory: {memory}, gpu: {gpu} }}"

# -- tasks -----------------------------------------------------------------------------------------
TASK_SESSION_NOT_FOUND = "Session {id} not found: " + ENOENT
TASK_SESSION_CLOSED = "Cannot create task in closed session"
TASK_ID_INVALID = "invalid task id"

# Task events: the code is the TaskState number the task moved to.
EVENT_TASK_CREATED = "Task was created with state <Pending>"
EVENT_TASK_RUNNING = "Task state was updated to <Running>"
EVENT_TASK_SUCCEED = "Task was completed with state <Succeed>"
EVENT_TASK_FAILED = "Task failed with state <Failed>"  # only when the executor gave no message

# Session-level events (owner task 0), returned by GetSession and ListSession only.
EVENT_BIND_FAILED_CODE = 1001
EVENT_RETRY_LIMIT_CODE = 1002
EVENT_BIND_FAILED = (
    "Executor <{executor}> on node <{node}> failed to bind session with return_code <{rc}>: {message}"
)
EVENT_RETRY_LIMIT = (
    "Session retry limit reached after {count}/{limit} failed attempts; new executor assignment is "
    "paused for this session; existing executors are unchanged."
)

# -- the fake's own (no upstream equivalent) ---------------------------------------------------------
SERVER_STOPPING = "the fake session manager is shutting down"  # UNAVAILABLE, ends open WatchTask streams

# -- nodes and executors ---------------------------------------------------------------------------
NODE_NOT_FOUND = "node <{name}> not found"
EXECUTOR_NOT_FOUND = "{id}"
EXECUTOR_BAD_STATE = "Executor is {state}"
EXECUTOR_NO_SESSION = "no session in executor"
EXECUTOR_NO_TASK = "no task in executor"
EXECUTOR_STATE_NAMES = {
    0: "unknown",
    1: "void",
    2: "idle",
    3: "binding",
    4: "bound",
    5: "unbinding",
    6: "releasing",
    7: "released",
}
