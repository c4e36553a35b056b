//! Building the guard from configuration: the register (operator's file or the default), the
//! Cedar rules, the token verifier and the contract's RPCs, all validated before serving.

use std::sync::Arc;

use anyhow::Context;
use tutela_policy::{AccessRules, Guard, MethodTable, Register};

use crate::config::Config;

/// The processing register `config` names.
pub fn load_register(config: &Config) -> anyhow::Result<Register> {
    if config.register.file.as_os_str().is_empty() {
        Ok(Register::default_register()?)
    } else {
        Ok(Register::load(&config.register.file)?)
    }
}

/// The access rules `config` names: the operator's policies file against the built-in schema, or
/// the defaults.
pub fn load_rules(config: &Config) -> anyhow::Result<AccessRules> {
    let file = &config.access.policies_file;
    if file.as_os_str().is_empty() {
        return AccessRules::default_rules().context("access rules");
    }
    let policies = std::fs::read_to_string(file)
        .with_context(|| format!("reading access policies {}", file.display()))?;
    AccessRules::new(tutela_policy::access::DEFAULT_SCHEMA, &policies)
        .with_context(|| format!("access policies {}", file.display()))
}

/// The guard for `config`, enforcing `register` and checking consent through `consent`.
pub fn build(
    config: &Config,
    audit: tutela_policy::audit::AuditLog,
    register: Arc<Register>,
    consent: Arc<tutela_policy::ConsentGate>,
) -> anyhow::Result<Guard> {
    let rules = Arc::new(load_rules(config)?);
    let settings = crate::auth::settings(config)?;
    let verifier =
        tutela_policy::principal::TokenVerifier::new(&settings).map_err(anyhow::Error::msg)?;
    let pool = tutela_proto::descriptor_pool().map_err(|e| anyhow::anyhow!("descriptors: {e}"))?;
    Ok(Guard::new(
        audit,
        verifier,
        register,
        rules,
        MethodTable::from_pool(pool),
        consent,
    )?
    .with_max_message_bytes(config.server.max_message_bytes))
}
