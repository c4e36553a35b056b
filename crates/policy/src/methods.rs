//! The RPCs the contract defines, read from the descriptor set once at start-up: what each one is
//! called, which service it belongs to, how it is authorised, and which data categories its
//! responses can carry (so that redaction is skipped when the caller may read all of them).

use std::collections::{HashMap, HashSet};

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};
use tutela_proto::common::DataCategory;

use crate::categories::CategorySet;
use crate::request::{PlanBuilder, RequestPlan};

/// gRPC services reachable without a token or purpose: health and reflection only.
pub const EXEMPT_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Plain HTTP paths (not gRPC) served on the same port that a signed token in the path
/// authorises on its own: RFC 8058 one-click unsubscribe (`POST /unsubscribe/{token}`), which a
/// mail client calls without any credential.
pub const TOKEN_HTTP_PREFIXES: [&str; 1] = [UNSUBSCRIBE_PATH];

/// The path prefix of RFC 8058 one-click unsubscribe: `POST {UNSUBSCRIBE_PATH}{token}`.
pub const UNSUBSCRIBE_PATH: &str = "/unsubscribe/";

/// How an RPC is authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorisation {
    /// Bearer token, purpose, register, access rules: the normal path.
    Guarded,
    /// A signed token inside the message authorises it (one-click unsubscribe, opt-in
    /// confirmation); the RPC's name contains `Unsubscribe` or `Confirm`.
    MessageToken,
}

/// One RPC of the contract.
#[derive(Debug, Clone)]
pub struct MethodInfo {
    /// `package.Service/Method`: the Cedar action and the audit record's RPC.
    pub rpc: String,
    /// The tutela area the RPC belongs to (`privacy`, `enrolment`, ...): the Cedar resource.
    pub area: String,
    /// How it is authorised.
    pub authorisation: Authorisation,
    /// The response message.
    pub output: MessageDescriptor,
    /// Every category a response can carry.
    pub output_categories: CategorySet,
    /// How its request is checked before the handler runs; `None` for a client-streaming RPC,
    /// whose messages are not buffered (the contract has none).
    pub input: Option<RequestPlan>,
}

/// Every RPC of the contract by HTTP/2 path (`/package.Service/Method`).
#[derive(Debug, Clone, Default)]
pub struct MethodTable {
    methods: HashMap<String, MethodInfo>,
}

/// The categories `message` and everything nested in it can carry.
pub fn message_categories(message: &MessageDescriptor) -> CategorySet {
    fn walk(m: &MessageDescriptor, seen: &mut HashSet<String>, acc: &mut CategorySet) {
        if !seen.insert(m.full_name().to_owned()) {
            return;
        }
        for field in m.fields() {
            if let Some(c) = tutela_proto::field_category(&field)
                && c != DataCategory::None
            {
                acc.insert(c);
            }
            if let Kind::Message(inner) = field.kind() {
                walk(&inner, seen, acc);
            }
        }
    }
    let mut acc = CategorySet::EMPTY;
    walk(message, &mut HashSet::new(), &mut acc);
    acc
}

impl MethodTable {
    /// The RPCs of every `tutela.*` service in `pool`.
    pub fn from_pool(pool: &DescriptorPool) -> Self {
        let mut methods = HashMap::new();
        // One set of message plans for every RPC: request messages share most of their parts.
        let mut plans = PlanBuilder::new();
        let mut inputs = Vec::new();
        for service in pool
            .services()
            .filter(|s| s.package_name().starts_with("tutela."))
        {
            let area = service
                .package_name()
                .split('.')
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            for method in service.methods() {
                let rpc = format!("{}/{}", service.full_name(), method.name());
                let authorisation =
                    if method.name().contains("Unsubscribe") || method.name().contains("Confirm") {
                        Authorisation::MessageToken
                    } else {
                        Authorisation::Guarded
                    };
                let output = method.output();
                let path = format!("/{rpc}");
                if !method.is_client_streaming() {
                    plans.add(&method.input());
                    inputs.push(path.clone());
                }
                methods.insert(
                    path,
                    MethodInfo {
                        rpc,
                        area: area.clone(),
                        authorisation,
                        output_categories: message_categories(&output),
                        output,
                        input: None,
                    },
                );
            }
        }
        for (path, plan) in inputs.into_iter().zip(plans.finish()) {
            if let Some(m) = methods.get_mut(&path) {
                m.input = Some(plan);
            }
        }
        Self { methods }
    }

    /// The RPC at an HTTP/2 path.
    pub fn get(&self, path: &str) -> Option<&MethodInfo> {
        self.methods.get(path)
    }

    /// Every RPC.
    pub fn iter(&self) -> impl Iterator<Item = &MethodInfo> {
        self.methods.values()
    }
}

/// Whether `path` belongs to an exempt service (health, reflection).
pub fn is_exempt(path: &str) -> bool {
    let service = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    EXEMPT_SERVICES.contains(&service)
}
