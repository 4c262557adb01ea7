"""gRPC glue built from service descriptors instead of protoc's ``_pb2_grpc`` modules.

One generic stub and one generic handler serve every flame.v1 service, so the servicers in
``flamepy_fake`` and the clients in ``flamepy_runner`` share the method table of the .proto
files and cannot drift from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor


def _classes(method: MethodDescriptor) -> tuple[Any, Any]:
    return (
        message_factory.GetMessageClass(method.input_type),
        message_factory.GetMessageClass(method.output_type),
    )


def method_path(service: ServiceDescriptor, method: str) -> str:
    """Return the HTTP/2 path of ``method``, e.g. ``/flame.v1.Frontend/GetSession``."""
    return f"/{service.full_name}/{method}"


class Stub:
    """Client stub: one multi-callable attribute per RPC of ``service``.

    Args:
        channel: the gRPC channel to call through.
        service: the service descriptor (for instance ``pb.FRONTEND_SERVICE``).
    """

    def __init__(self, channel: grpc.Channel, service: ServiceDescriptor) -> None:
        self.service = service
        for method in service.methods:
            request_cls, response_cls = _classes(method)
            factory: Callable[..., Any]
            if method.client_streaming and method.server_streaming:
                factory = channel.stream_stream
            elif method.client_streaming:
                factory = channel.stream_unary
            elif method.server_streaming:
                factory = channel.unary_stream
            else:
                factory = channel.unary_unary
            setattr(
                self,
                method.name,
                factory(
                    method_path(service, method.name),
                    request_serializer=request_cls.SerializeToString,
                    response_deserializer=response_cls.FromString,
                ),
            )

    def __getattr__(self, name: str) -> Any:  # only reached for names that are not RPCs
        raise AttributeError(f"{self.service.full_name} has no RPC named {name!r}")


#: Replaces a unary-request RPC's request deserializer and behaviour: given the request class
#: and the servicer's method, returns ``(deserializer, behaviour)``.
UnaryWrapper = Callable[[Any, Callable[..., Any]], tuple[Callable[[bytes], Any], Callable[..., Any]]]


def generic_handler(
    service: ServiceDescriptor,
    servicer: object,
    *,
    wrap_unary_request: UnaryWrapper | None = None,
) -> grpc.GenericRpcHandler:
    """Build a handler that routes each RPC of ``service`` to the method of the same name.

    RPCs that ``servicer`` does not define answer UNIMPLEMENTED, as protoc's base servicers do.

    Args:
        service: the service descriptor.
        servicer: an object with one ``Name(request, context)`` method per implemented RPC.
        wrap_unary_request: replaces the deserializer and behaviour of each RPC whose request
            is a single message (the fake cluster measures requests with it before parsing).
    """
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        impl = getattr(servicer, method.name, None)
        if impl is None:
            continue
        request_cls, response_cls = _classes(method)
        kwargs = {
            "request_deserializer": request_cls.FromString,
            "response_serializer": response_cls.SerializeToString,
        }
        if wrap_unary_request is not None and not method.client_streaming:
            kwargs["request_deserializer"], impl = wrap_unary_request(request_cls, impl)
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(impl, **kwargs)
        elif method.client_streaming:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(impl, **kwargs)
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(impl, **kwargs)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(impl, **kwargs)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
