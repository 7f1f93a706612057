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

/// Default page size of every list RPC.
pub const DEFAULT_PAGE_SIZE: i32 = 50;
/// Largest page size of every list RPC.
pub const MAX_PAGE_SIZE: i32 = 200;

/// Collects every bad field of a request before answering.
#[derive(Debug, Default)]
pub struct Check(pub Vec<FieldViolation>);

impl Check {
    pub fn add(&mut self, result: Result<(), FieldViolation>) -> &mut Self {
        if let Err(violation) = result {
            self.0.push(violation);
        }
        self
    }

    pub fn id(&mut self, field: &str, value: &str) -> &mut Self {
        self.add(id(field, value))
    }

    pub fn text(&mut self, field: &str, value: &str) -> &mut Self {
        self.add(text(field, value))
    }

    /// An optional timestamp, converted; a malformed one is a violation.
    pub fn timestamp(&mut self, field: &str, value: Option<&prost_types::Timestamp>) -> Option<crate::clock::Micros> {
        let micros = crate::clock::from_timestamp(value?);
        if micros.is_none() {
            self.0.push(FieldViolation::new(field, "is not a valid timestamp"));
        }
        micros
    }

    /// Page size (0: the default) and the position a page token encodes.
    pub fn page(&mut self, page_size: i32, page_token: &str) -> Page {
        if !(0..=MAX_PAGE_SIZE).contains(&page_size) {
            self.0.push(FieldViolation::new("page_size", format!("must be between 0 and {MAX_PAGE_SIZE}")));
        }
        let before = if page_token.is_empty() {
            None
        } else {
            let parsed = page_token.parse::<i64>().ok().filter(|id| *id > 0);
            if parsed.is_none() {
                self.0.push(FieldViolation::new("page_token", "is not a token from a previous page"));
            }
            parsed
        };
        let size = if page_size <= 0 { DEFAULT_PAGE_SIZE } else { page_size.min(MAX_PAGE_SIZE) };
        Page { size: i64::from(size), before }
    }

    /// Every violation found, if any.
    pub fn finish(self) -> Result<(), Vec<FieldViolation>> {
        if self.0.is_empty() { Ok(()) } else { Err(self.0) }
    }

    /// INVALID_ARGUMENT naming every bad field, in the caller's error domain.
    pub fn done(self, domain: &str) -> Result<(), tonic::Status> {
        self.finish().map_err(|violations| crate::status::invalid_argument(domain, &violations))
    }
}

/// One page of a list: its size and the position it starts after.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub size: i64,
    pub before: Option<i64>,
}

impl Page {
    /// Trims the extra row fetched beyond the page and makes the next token
    /// from the last row kept (fetch `size + 1` rows to know whether more follow).
    pub fn cut<T>(&self, mut rows: Vec<T>, position: impl Fn(&T) -> i64) -> (Vec<T>, String) {
        let size = usize::try_from(self.size).unwrap_or(0);
        let more = rows.len() > size;
        rows.truncate(size);
        let token =
            if more { rows.last().map(|row| position(row).to_string()).unwrap_or_default() } else { String::new() };
        (rows, token)
    }
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
