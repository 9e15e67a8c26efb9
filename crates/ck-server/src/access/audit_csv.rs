//! The audit trail as CSV, for the API's and the web UI's exports.

use ck_store::AuditRecord;
use time::format_description::well_known::Rfc3339;

/// Audit records as RFC 4180 CSV with a header line.
pub fn audit_csv(records: &[AuditRecord]) -> String {
    let mut text = String::from("id,at,actor,action,resource,request_id,outcome,status,client,body_sha256,detail\n");
    for record in records {
        text.push_str(&csv_row(record));
    }
    text
}

/// One RFC 4180 row. Written by hand: eleven fields need quoting rules only. A cell that a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@`) gets a leading `'`, since some
/// fields (request paths in failure details) come from clients.
fn csv_row(record: &AuditRecord) -> String {
    let at = record.at.format(&Rfc3339).unwrap_or_default();
    let status = record.status.map(|s| s.to_string());
    let cells = [
        Some(record.id.as_str()),
        Some(at.as_str()),
        Some(record.actor.as_str()),
        Some(record.action.as_str()),
        record.resource.as_deref(),
        record.request_id.as_deref(),
        Some(record.outcome.as_str()),
        status.as_deref(),
        record.client.as_deref(),
        record.body_sha256.as_deref(),
        record.detail.as_deref(),
    ];
    let mut row = cells
        .iter()
        .map(|c| csv_cell(c.unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",");
    row.push('\n');
    row
}

fn csv_cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    }
}
