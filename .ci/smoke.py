"""Talks to a running tutela with clients nobody on the team wrote (grpcio's health and
reflection packages): the server must say SERVING and list its services."""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

target = sys.argv[1]
channel = grpc.insecure_channel(target)
grpc.channel_ready_future(channel).result(timeout=60)

status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
assert status.status == health_pb2.HealthCheckResponse.SERVING, status
services = ProtoReflectionDescriptorDatabase(channel).get_services()
assert "grpc.health.v1.Health" in services, services
assert "tutela.consent.v1.ConsentLedger" in services, services
print(f"smoke: SERVING, services: {', '.join(sorted(services))}")
