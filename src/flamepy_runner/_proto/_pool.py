"""Build flame.v1 classes in a descriptor pool of our own.

protobuf's default pool accepts one ``types.proto`` per interpreter and refuses a second,
different one with "duplicate file name". Every ``flamepy`` release registers its own
``types.proto`` there, so our bindings never touch the default pool: each call to
:func:`build` makes a fresh :class:`DescriptorPool`, and the message classes built from it
are independent of flamepy's (they share only the wire format).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper


def build(files: tuple[bytes, ...]) -> dict[str, Any]:
    """Load serialized FileDescriptorProtos into a private pool.

    Args:
        files: serialized ``FileDescriptorProto`` messages, each after the files it imports.

    Returns:
        A mapping from the short name of every top-level message, enum and service to its
        message class, :class:`EnumTypeWrapper` or ``ServiceDescriptor``.
    """
    pool = descriptor_pool.DescriptorPool()
    namespace: dict[str, Any] = {}
    for data in files:
        file_desc = pool.AddSerializedFile(data)
        for name, msg in file_desc.message_types_by_name.items():
            namespace[name] = message_factory.GetMessageClass(msg)
        for name, enum in file_desc.enum_types_by_name.items():
            namespace[name] = EnumTypeWrapper(enum)
        for name, service in file_desc.services_by_name.items():
            namespace[name] = service
    return namespace
