"""Talks to a running tutela with clients nobody on the team wrote (grpcio's health and
reflection packages): the server must say SERVING and list its services."""

import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

target = sys.argv[1]


def connect(deadline_s: float = 180.0) -> grpc.Channel:
    """A fresh channel per attempt: one channel that failed to connect backs off exponentially
    (up to two minutes), so it can miss a server that came up in the meantime."""
    deadline = time.monotonic() + deadline_s
    while True:
        channel = grpc.insecure_channel(target)
        try:
            grpc.channel_ready_future(channel).result(timeout=2)
            return channel
        except grpc.FutureTimeoutError:
            channel.close()
            if time.monotonic() > deadline:
                raise


channel = connect()

status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
assert status.status == health_pb2.HealthCheckResponse.SERVING, status
services = ProtoReflectionDescriptorDatabase(channel).get_services()
assert "grpc.health.v1.Health" in services, services
assert "tutela.consent.v1.ConsentLedger" in services, services
assert "tutela.enrolment.v1.LearnerService" in services, services
print(f"smoke: SERVING, services: {', '.join(sorted(services))}")
