//! The contract's own guarantees: every field is annotated, names match the proto enums.

// Test helpers may fail loudly: a panic here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use prost_reflect::DescriptorPool;
use tutela_proto::common::{DataCategory, LegalBasis, Purpose};
use tutela_proto::{
    CATEGORY_NAMES, LEGAL_BASIS_NAMES, PURPOSE_NAMES, descriptor_pool, field_text_rule,
    unannotated_fields, unruled_string_fields,
};

#[test]
fn every_field_of_every_tutela_message_has_a_data_category() {
    let pool = descriptor_pool().expect("descriptor set decodes");
    let missing = unannotated_fields(pool);
    assert!(
        missing.is_empty(),
        "fields without a data category: {missing:?}"
    );
    // The walk must actually have visited something, or the check above proves nothing.
    let tutela_fields = pool
        .all_messages()
        .filter(|m| m.package_name().starts_with("tutela."))
        .map(|m| m.fields().count())
        .sum::<usize>();
    assert!(tutela_fields > 20, "walked only {tutela_fields} fields");
}

#[test]
fn every_string_field_of_every_tutela_message_has_a_text_rule() {
    let pool = descriptor_pool().expect("descriptor set decodes");
    let missing = unruled_string_fields(pool);
    assert!(
        missing.is_empty(),
        "string fields without a text rule: {missing:?}"
    );
    let ruled: Vec<_> = pool
        .all_messages()
        .filter(|m| m.package_name().starts_with("tutela."))
        .flat_map(|m| m.fields().collect::<Vec<_>>())
        .filter_map(|f| field_text_rule(&f))
        .collect();
    assert!(
        ruled.len() > 100,
        "walked only {} string fields",
        ruled.len()
    );
    // Repeated string fields are walked too.
    let disabilities = pool
        .get_message_by_name("tutela.enrolment.v1.LearnerProfile")
        .and_then(|m| m.get_field_by_name("disabilities"))
        .unwrap();
    assert!(disabilities.is_list());
    assert_eq!(field_text_rule(&disabilities).unwrap().max_length, 200);
}

/// Compiles the real protos with `common.proto` edited by `edit`.
fn compile_common_edited(edit: impl FnOnce(String) -> String) -> DescriptorPool {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let original = std::fs::read_to_string(root.join("tutela/common/v1/common.proto")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tutela/common/v1");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::write(copy.join("common.proto"), edit(original)).unwrap();
    let mut compiler = protox::Compiler::new([dir.path()]).unwrap();
    compiler.include_imports(true);
    compiler.open_file("tutela/common/v1/common.proto").unwrap();
    DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).unwrap()
}

/// The test of the test: a string field whose text rule was removed, or whose rule has no kind,
/// is named exactly.
#[test]
fn the_text_rule_check_names_a_field_whose_rule_was_removed() {
    let broken = compile_common_edited(|original| {
        let ruled = ", (text) = {kind: TEXT_KIND_CODE, max_length: 64}];\n}\n\n// Says where";
        assert!(original.contains(ruled));
        original.replace(ruled, "];\n}\n\n// Says where").replace(
            "(text) = {kind: TEXT_KIND_IDEMPOTENCY_KEY, max_length: 128}",
            "(text) = {max_length: 128}",
        )
    });
    assert_eq!(
        unruled_string_fields(&broken),
        vec![
            "tutela.common.v1.PageRequest.page_token".to_owned(),
            "tutela.common.v1.IdempotencyKey.key".to_owned()
        ]
    );
}

/// The test of the test: compile the real protos with one annotation removed, and the check
/// names exactly that field.
#[test]
fn the_annotation_check_names_a_field_whose_annotation_was_removed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let original = std::fs::read_to_string(root.join("tutela/common/v1/common.proto")).unwrap();
    let annotated = "uint32 page_size = 1 [(category) = DATA_CATEGORY_NONE];";
    assert!(original.contains(annotated));
    let edited = original.replace(annotated, "uint32 page_size = 1;");

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tutela/common/v1");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::write(copy.join("common.proto"), edited).unwrap();
    let mut compiler = protox::Compiler::new([dir.path()]).unwrap();
    compiler.include_imports(true);
    compiler.open_file("tutela/common/v1/common.proto").unwrap();
    let broken = DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).unwrap();

    assert_eq!(
        unannotated_fields(&broken),
        vec!["tutela.common.v1.PageRequest.page_size".to_owned()]
    );
}

#[test]
fn category_short_names_match_the_proto_enum() {
    for (category, short) in CATEGORY_NAMES {
        let proto = category
            .as_str_name()
            .strip_prefix("DATA_CATEGORY_")
            .unwrap();
        assert_eq!(proto.to_ascii_lowercase(), short);
        assert_eq!(DataCategory::from_short_name(short), Some(category));
    }
    // Every proto value but UNSPECIFIED is in the table.
    let proto_values = (0..64)
        .filter(|n| DataCategory::try_from(*n).is_ok())
        .count();
    assert_eq!(proto_values, CATEGORY_NAMES.len() + 1);
}

#[test]
fn purpose_and_legal_basis_short_names_match_the_proto_enums() {
    for (purpose, short) in PURPOSE_NAMES {
        let proto = purpose.as_str_name().strip_prefix("PURPOSE_").unwrap();
        assert_eq!(proto.to_ascii_lowercase(), short);
        assert_eq!(Purpose::from_short_name(short), Some(purpose));
    }
    assert_eq!(
        (0..64).filter(|n| Purpose::try_from(*n).is_ok()).count(),
        PURPOSE_NAMES.len() + 1
    );
    for (basis, short) in LEGAL_BASIS_NAMES {
        let proto = basis.as_str_name().strip_prefix("LEGAL_BASIS_").unwrap();
        assert_eq!(proto.to_ascii_lowercase(), short);
        assert_eq!(LegalBasis::from_short_name(short), Some(basis));
    }
    assert_eq!(
        (0..64).filter(|n| LegalBasis::try_from(*n).is_ok()).count(),
        LEGAL_BASIS_NAMES.len() + 1
    );
}

#[test]
fn verification_method_short_names_match_the_proto_enum() {
    use tutela_proto::VERIFICATION_METHOD_NAMES;
    use tutela_proto::privacy::VerificationMethod;
    for (method, short) in VERIFICATION_METHOD_NAMES {
        let proto = method
            .as_str_name()
            .strip_prefix("VERIFICATION_METHOD_")
            .unwrap();
        assert_eq!(proto.to_ascii_lowercase(), short);
        assert_eq!(VerificationMethod::from_short_name(short), Some(method));
    }
    assert_eq!(
        (0..64)
            .filter(|n| VerificationMethod::try_from(*n).is_ok())
            .count(),
        VERIFICATION_METHOD_NAMES.len() + 1
    );
}
