"""AgentTier Python SDK: isolated, long-lived sandboxes for code and AI agents.

Typical use (agent mode)::

    from agenttier import AgentTierClient

    with AgentTierClient() as client:  # AGENTTIER_API_URL, AGENTTIER_API_KEY
        sb = client.create_sandbox(template="langgraph-agent", name="demo-agent")
        sb.wait_until_running()
        sb.agent.configure(
            files=[("/workspace/agent.py", b"import sys\\nprint(f'hello {sys.stdin.read()}')\\n")],
            entrypoint=["python", "/workspace/agent.py"],
        )
        print(sb.agent.invoke("world").stdout)  # hello world

:class:`AsyncAgentTierClient` has the same surface with ``await``/``async for``.
"""

from agenttier._core import ResumePolicy
from agenttier._version import __version__
from agenttier.async_client import (
    AsyncAgentAPI,
    AsyncAgentTierClient,
    AsyncFilesAPI,
    AsyncInvokeStream,
    AsyncSandbox,
)
from agenttier.auth import APIKeyAuth, AuthProvider, BearerTokenAuth, KubeconfigAuth
from agenttier.client import AgentAPI, AgentTierClient, FilesAPI, InvokeStream, Sandbox
from agenttier.exceptions import (
    AgentTierError,
    APIConnectionError,
    APIError,
    AuthenticationError,
    AuthorizationError,
    ConcurrencyLimitError,
    ConfigureError,
    ConflictError,
    InvokeError,
    NotFoundError,
    PolicyViolationError,
    SandboxErrorState,
    SandboxTimeoutError,
    StreamInterruptedError,
)
from agenttier.models import (
    AgentConfigureStatus,
    CommandResult,
    ConfigureResult,
    CreatedBy,
    CurrentUser,
    ErrorEvent,
    ExecResult,
    ExitEvent,
    FileEntry,
    GapEvent,
    InvokeEvent,
    InvokeInfo,
    InvokeResult,
    LogEvent,
    SandboxPhase,
    SandboxSummary,
    StartEvent,
    Template,
    WriteResult,
)

__all__ = [
    "__version__",
    # clients and handles
    "AgentTierClient",
    "AsyncAgentTierClient",
    "Sandbox",
    "AsyncSandbox",
    "FilesAPI",
    "AsyncFilesAPI",
    "AgentAPI",
    "AsyncAgentAPI",
    "InvokeStream",
    "AsyncInvokeStream",
    "ResumePolicy",
    # auth
    "AuthProvider",
    "APIKeyAuth",
    "BearerTokenAuth",
    "KubeconfigAuth",
    # models
    "AgentConfigureStatus",
    "CommandResult",
    "ConfigureResult",
    "CreatedBy",
    "CurrentUser",
    "ExecResult",
    "FileEntry",
    "InvokeInfo",
    "InvokeResult",
    "SandboxPhase",
    "SandboxSummary",
    "Template",
    "WriteResult",
    # invoke events
    "InvokeEvent",
    "StartEvent",
    "LogEvent",
    "ExitEvent",
    "GapEvent",
    "ErrorEvent",
    # errors
    "AgentTierError",
    "AuthenticationError",
    "AuthorizationError",
    "PolicyViolationError",
    "NotFoundError",
    "ConflictError",
    "APIError",
    "ConcurrencyLimitError",
    "APIConnectionError",
    "StreamInterruptedError",
    "ConfigureError",
    "InvokeError",
    "SandboxTimeoutError",
    "SandboxErrorState",
]
