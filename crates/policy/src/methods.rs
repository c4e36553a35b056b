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
/// authorises on its own, each with the RPC it performs (its audit records name that RPC): RFC
/// 8058 one-click unsubscribe (`POST /unsubscribe/{token}`), which a mail client calls without
/// any credential.
pub const TOKEN_HTTP_PREFIXES: [(&str, &str); 1] = [(
    UNSUBSCRIBE_PATH,
    "tutela.subscription.v1.SubscriptionService/Unsubscribe",
)];

/// The path prefix of RFC 8058 one-click unsubscribe: `POST {UNSUBSCRIBE_PATH}{token}`.
pub const UNSUBSCRIBE_PATH: &str = "/unsubscribe/";

/// How an RPC is authorised, as the contract declares it with the `tutela.common.v1.authorisation`
/// method option (never from the RPC's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorisation {
    /// Bearer token, purpose, register, access rules: the normal path, and the default of an RPC
    /// that declares nothing.
    Guarded,
    /// A signed token inside the message authorises it (one-click unsubscribe, opt-in
    /// confirmation): declared `AUTHORISATION_MESSAGE_TOKEN`. The guard audits each call itself
    /// ([`crate::token_call`]).
    MessageToken,
}

impl Authorisation {
    /// How `method` is authorised, from its method option.
    pub fn of(method: &prost_reflect::MethodDescriptor) -> Self {
        match tutela_proto::method_authorisation(method) {
            tutela_proto::common::Authorisation::MessageToken => Self::MessageToken,
            _ => Self::Guarded,
        }
    }
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
                let authorisation = Authorisation::of(&method);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's RPCs that a token in their message authorises: exactly the two a person
    /// calls from a message they received. A new one must be added here on purpose.
    #[test]
    fn the_message_token_methods_are_exactly_the_ones_the_contract_declares() {
        let table = MethodTable::from_pool(tutela_proto::descriptor_pool().unwrap());
        let mut token: Vec<&str> = table
            .iter()
            .filter(|m| m.authorisation == Authorisation::MessageToken)
            .map(|m| m.rpc.as_str())
            .collect();
        token.sort_unstable();
        assert_eq!(
            token,
            [
                "tutela.subscription.v1.SubscriptionService/ConfirmSubscription",
                "tutela.subscription.v1.SubscriptionService/Unsubscribe",
            ]
        );
    }

    /// Compiles the real contract plus a service of a future area, `tutela.exam.v1`.
    fn with_exam_service(service: &str) -> DescriptorPool {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
        let dir = tempfile::tempdir().unwrap();
        let exam = dir.path().join("tutela/exam/v1");
        std::fs::create_dir_all(&exam).unwrap();
        let file = format!(
            "syntax = \"proto3\";\npackage tutela.exam.v1;\n\
             import \"tutela/common/v1/common.proto\";\n\
             message Empty {{}}\n{service}\n"
        );
        std::fs::write(exam.join("exam.proto"), file).unwrap();
        let mut compiler = protox::Compiler::new([root.as_path(), dir.path()]).unwrap();
        compiler.include_imports(true);
        compiler.open_file("tutela/exam/v1/exam.proto").unwrap();
        DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).unwrap()
    }

    /// No RPC's trust depends on its name: `ConfirmExamBooking` and `UnsubscribeFromNews`
    /// without the option take the bearer-token path (principal, purpose, Cedar, the coverage
    /// check); only the declared one is a message-token call.
    #[test]
    fn an_undeclared_rpc_named_like_a_token_call_takes_the_bearer_token_path() {
        let pool = with_exam_service(
            "service ExamService {\n\
               rpc ConfirmExamBooking(Empty) returns (Empty);\n\
               rpc UnsubscribeFromNews(Empty) returns (Empty);\n\
               rpc RedeemVoucher(Empty) returns (Empty) {\n\
                 option (tutela.common.v1.authorisation) = AUTHORISATION_MESSAGE_TOKEN;\n\
               }\n\
               rpc BookExam(Empty) returns (Empty) {\n\
                 option (tutela.common.v1.authorisation) = AUTHORISATION_BEARER_TOKEN;\n\
               }\n\
             }",
        );
        let table = MethodTable::from_pool(&pool);
        let of = |method: &str| {
            table
                .get(&format!("/tutela.exam.v1.ExamService/{method}"))
                .unwrap()
                .authorisation
        };
        assert_eq!(of("ConfirmExamBooking"), Authorisation::Guarded);
        assert_eq!(of("UnsubscribeFromNews"), Authorisation::Guarded);
        assert_eq!(of("BookExam"), Authorisation::Guarded);
        assert_eq!(of("RedeemVoucher"), Authorisation::MessageToken);
        // And so the guard's coverage check demands Cedar actions for them.
        let err =
            crate::guard::covers_every_rpc(&table, &crate::AccessRules::default_rules().unwrap())
                .unwrap_err()
                .to_string();
        assert!(err.contains("ExamService/ConfirmExamBooking"), "{err}");
        assert!(err.contains("ExamService/UnsubscribeFromNews"), "{err}");
        assert!(!err.contains("RedeemVoucher"), "{err}");
    }
}
