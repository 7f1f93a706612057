//! Edge validation shared by every service: ids, keys and free text.

/// Longest id we accept (program, customer, idempotency key, reference), in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Longest free-text reason we keep, in bytes.
pub const MAX_REASON_BYTES: usize = 512;

/// A field that failed validation, with a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

/// A required, printable id of at most [`MAX_ID_BYTES`].
pub fn id(field: &str, value: &str) -> Result<(), FieldViolation> {
    if value.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(FieldViolation::new(field, format!("must be at most {MAX_ID_BYTES} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldViolation::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// Optional free text of at most [`MAX_REASON_BYTES`].
pub fn text(field: &str, value: &str) -> Result<(), FieldViolation> {
    if value.len() > MAX_REASON_BYTES {
        return Err(FieldViolation::new(field, format!("must be at most {MAX_REASON_BYTES} bytes")));
    }
    Ok(())
}

/// A strictly positive amount no larger than `max`.
pub fn positive(field: &str, value: i64, max: i64) -> Result<(), FieldViolation> {
    if value <= 0 {
        return Err(FieldViolation::new(field, "must be greater than zero"));
    }
    if value > max {
        return Err(FieldViolation::new(field, format!("must be at most {max}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_for_emptiness_length_and_control_characters() {
        assert!(id("program_id", "shop-1").is_ok());
        assert_eq!(id("program_id", "").unwrap_err().field, "program_id");
        assert!(id("x", &"a".repeat(MAX_ID_BYTES)).is_ok());
        assert!(id("x", &"a".repeat(MAX_ID_BYTES + 1)).is_err());
        assert!(id("x", "a\nb").is_err());
    }

    #[test]
    fn amounts_must_be_positive_and_bounded() {
        assert!(positive("points", 1, 10).is_ok());
        assert!(positive("points", 0, 10).is_err());
        assert!(positive("points", -3, 10).is_err());
        assert!(positive("points", 11, 10).is_err());
    }
}
