"""Talks to a running tutela with clients nobody on the team wrote (grpcio's health and
reflection packages, and a client built at run time from the descriptors the server reflects,
as grpcurl does): the server must say SERVING, list its services, and answer real calls the way
the protos' comments say.

Usage: smoke.py HOST:PORT TUTELA_BINARY DATA_DIR"""

import subprocess
import sys
import time
import urllib.request

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

target, binary, data_dir = sys.argv[1:4]


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



def issue_token(role):
    """A token for `role`, signed with the development secret `serve` generated in the data dir."""
    return subprocess.run(
        [binary, "token", "issue", "--tenant", "default", "--role", role, "--data-dir", data_dir],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip().splitlines()[-1]


token = issue_token("registrar")

pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
learners = pool.FindServiceByName("tutela.enrolment.v1.LearnerService")


def rpc(name, service=learners, stream=False):
    method = service.FindMethodByName(name)
    request = message_factory.GetMessageClass(method.input_type)
    response = message_factory.GetMessageClass(method.output_type)
    call = (channel.unary_stream if stream else channel.unary_unary)(
        f"/{service.full_name}/{name}",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )
    return request, call


def metadata(purpose="course_administration", bearer=None):
    pairs = [("authorization", f"Bearer {bearer or token}")]
    if purpose:
        pairs.append(("x-tutela-purpose", purpose))
    return pairs


def refused(call, request, purpose="course_administration"):
    try:
        call(request, metadata=metadata(purpose))
    except grpc.RpcError as err:
        print(f"smoke: refused as expected: {err.code()} {err.details()}")
        return err.code()
    raise AssertionError("the call was expected to fail")


CreateLearner, create = rpc("CreateLearner")
GetLearner, get = rpc("GetLearner")

request = CreateLearner()
request.profile.given_name = "Smoke"
request.profile.family_name = "Probe"
request.profile.email = "smoke.probe@example.org"
request.profile.date_of_birth = "1990-05-17"
learner = create(request, metadata=metadata()).learner
assert learner.learner_id, learner

lookup = GetLearner()
lookup.learner.subject_id = learner.learner_id
got = get(lookup, metadata=metadata()).learner
assert got.profile.email == "smoke.probe@example.org", got

# What the protos promise for bad calls: no purpose, a minor without a guardian's consent, a
# prohibited identifier.
assert refused(get, lookup, purpose=None) == grpc.StatusCode.INVALID_ARGUMENT
minor = CreateLearner()
minor.CopyFrom(request)
minor.profile.date_of_birth = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 10 * 365 * 86400))
code = refused(create, minor)
assert code == grpc.StatusCode.FAILED_PRECONDITION, code
ssn = CreateLearner()
ssn.CopyFrom(request)
ssn.profile.address = "SSN 123-45-6789"
assert refused(create, ssn) == grpc.StatusCode.INVALID_ARGUMENT
print("smoke: CreateLearner, GetLearner and three refusals answered as the protos say")

# Subscriptions: double opt-in, the audience as a server stream, and RFC 8058 one-click
# unsubscribe with Python's own HTTP client on the same port.
marketing = issue_token("marketing")
subscriptions = pool.FindServiceByName("tutela.subscription.v1.SubscriptionService")
PutTopic, put_topic = rpc("PutTopic", subscriptions)
Subscribe, subscribe = rpc("Subscribe", subscriptions)
Confirm, confirm = rpc("ConfirmSubscription", subscriptions)
Resolve, resolve = rpc("ResolveAudience", subscriptions, stream=True)

topic = PutTopic()
topic.topic.topic_id = "courses"
topic.topic.description = "New courses and dates"
put_topic(topic, metadata=metadata("consent_management", marketing))
signup = Subscribe()
signup.channel = 1  # CHANNEL_EMAIL
signup.topic = "courses"
signup.address = "smoke.news@example.org"
signup.evidence.source = "smoke-form"
signup.evidence.wording_version = "smoke-1"
signup.evidence.wording_sha256 = "e" * 64
pending = subscribe(signup, metadata=metadata("consent_management", marketing))
assert pending.confirmation_token, pending
click = Confirm()
click.token = pending.confirmation_token
click.evidence.CopyFrom(signup.evidence)
assert confirm(click).state == 2  # SUBSCRIPTION_STATE_CONFIRMED, with no credential at all

audience = Resolve()
audience.topic = "courses"
audience.channel = 1


def recipients():
    return [r for batch in resolve(audience, metadata=metadata("marketing", marketing)) for r in batch.recipients]


found = recipients()
assert [r.address for r in found] == ["smoke.news@example.org"], found
assert found[0].list_unsubscribe_post == "List-Unsubscribe=One-Click", found[0]
url = found[0].list_unsubscribe.strip("<>").replace("http://127.0.0.1:50051", f"http://{target}")
post = urllib.request.Request(url, data=b"List-Unsubscribe=One-Click", method="POST")
with urllib.request.urlopen(post, timeout=10) as answer:
    assert answer.status == 200, answer.status
    assert answer.headers.get("Set-Cookie") is None
assert recipients() == []
print("smoke: Subscribe, ConfirmSubscription, ResolveAudience (stream) and RFC 8058 unsubscribe over HTTP")
