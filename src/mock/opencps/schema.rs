//! The OpenCPS v2 tables the SQL source reads, as Liferay creates them from OpenCPS's portable
//! DDL (`service.xml`, `META-INF/sql/tables.sql` of backend-dossiermgt-service): the columns
//! that synchronization and our simulator touch, with Liferay's type for each on MySQL/MariaDB
//! (`LONG` → BIGINT, `DATE` → DATETIME(6), `BOOLEAN` → TINYINT, `TEXT` → LONGTEXT) and on
//! PostgreSQL (int8, timestamp, bool, text), and the Liferay indexes the profile's look-ups use.
//! Written for this project from the public schema; not a copy of it.

use crate::provincial::sql::Dialect;

/// A column's portable (Liferay) type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Long,
    Int,
    Date,
    Bool,
    Text,
    Varchar(u32),
}

impl Ty {
    fn sql(self, dialect: Dialect) -> String {
        match (self, dialect) {
            (Ty::Long, Dialect::MySql) => "BIGINT".into(),
            (Ty::Long, Dialect::Postgres) => "INT8".into(),
            (Ty::Int, Dialect::MySql) => "INTEGER".into(),
            (Ty::Int, Dialect::Postgres) => "INT4".into(),
            (Ty::Date, Dialect::MySql) => "DATETIME(6)".into(),
            (Ty::Date, Dialect::Postgres) => "TIMESTAMP".into(),
            (Ty::Bool, Dialect::MySql) => "TINYINT".into(),
            (Ty::Bool, Dialect::Postgres) => "BOOL".into(),
            (Ty::Text, Dialect::MySql) => "LONGTEXT".into(),
            (Ty::Text, Dialect::Postgres) => "TEXT".into(),
            (Ty::Varchar(n), _) => format!("VARCHAR({n})"),
        }
    }
}

/// One table: its name, its primary key (the first column) and its columns.
#[derive(Debug)]
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Ty)],
}

use Ty::*;

pub(crate) const DOSSIER: Table = Table {
    name: "opencps_dossier",
    columns: &[
        ("dossierId", Long),
        ("uuid_", Varchar(75)),
        ("groupId", Long),
        ("companyId", Long),
        ("userId", Long),
        ("userName", Varchar(255)),
        ("createDate", Date),
        ("modifiedDate", Date),
        ("referenceUid", Varchar(255)),
        ("processNo", Varchar(128)),
        ("serviceCode", Varchar(128)),
        ("serviceName", Text),
        ("govAgencyCode", Varchar(128)),
        ("govAgencyName", Varchar(512)),
        ("applicantName", Varchar(500)),
        ("applicantIdType", Varchar(128)),
        ("applicantIdNo", Varchar(128)),
        ("contactName", Text),
        ("contactTelNo", Varchar(128)),
        ("contactEmail", Varchar(255)),
        ("dossierNote", Text),
        ("dossierNo", Varchar(255)),
        ("submitDate", Date),
        ("receiveDate", Date),
        ("dueDate", Date),
        ("releaseDate", Date),
        ("finishDate", Date),
        ("dossierStatus", Varchar(255)),
        ("dossierStatusText", Text),
        ("dossierSubStatus", Varchar(128)),
        ("dossierActionId", Long),
        ("viaPostal", Int),
        ("online_", Bool),
        ("originDossierId", Long),
        ("originDossierNo", Varchar(255)),
        ("fromViaPostal", Int),
    ],
};

pub(crate) const ACTION: Table = Table {
    name: "opencps_dossieraction",
    columns: &[
        ("dossierActionId", Long),
        ("uuid_", Varchar(75)),
        ("companyId", Long),
        ("groupId", Long),
        ("userId", Long),
        ("userName", Varchar(255)),
        ("createDate", Date),
        ("modifiedDate", Date),
        ("dossierId", Long),
        ("serviceProcessId", Long),
        ("previousActionId", Long),
        ("fromStepCode", Varchar(255)),
        ("actionCode", Varchar(100)),
        ("actionUser", Varchar(255)),
        ("actionName", Varchar(512)),
        ("actionNote", Text),
        ("stepCode", Varchar(255)),
        ("stepName", Varchar(512)),
        ("dueDate", Date),
        ("pending", Bool),
        ("state_", Int),
    ],
};

pub(crate) const PROCESS_STEP: Table = Table {
    name: "opencps_processstep",
    columns: &[
        ("processStepId", Long),
        ("uuid_", Varchar(75)),
        ("groupId", Long),
        ("createDate", Date),
        ("modifiedDate", Date),
        ("stepCode", Varchar(255)),
        ("serviceProcessId", Long),
        ("stepName", Varchar(500)),
        ("sequenceNo", Varchar(255)),
        ("dossierStatus", Varchar(255)),
        ("dossierSubStatus", Varchar(255)),
    ],
};

pub(crate) const STATUS_MAPPING: Table = Table {
    name: "opencps_dossierstatusmapping",
    columns: &[
        ("dossierStatusMappingId", Long),
        ("groupId", Long),
        ("companyId", Long),
        ("createDate", Date),
        ("modifiedDate", Date),
        ("statusCode", Varchar(255)),
        ("statusCodeDVCQG", Varchar(128)),
        ("subStatusCode", Varchar(128)),
    ],
};

pub(crate) const SERVICE_MAPPING: Table = Table {
    name: "opencps_serviceinfomapping",
    columns: &[
        ("serviceInfoMappingId", Long),
        ("groupId", Long),
        ("companyId", Long),
        ("createDate", Date),
        ("modifiedDate", Date),
        ("serviceCode", Varchar(128)),
        ("serviceCodeDVCQG", Varchar(128)),
        ("serviceNameDVCQG", Text),
        ("synced", Int),
    ],
};

/// A dossier's files: what the citizen submitted and, with `dossierPartType` 2, the results.
pub(crate) const FILE: Table = Table {
    name: "opencps_dossierfile",
    columns: &[
        ("dossierFileId", Long),
        ("uuid_", Varchar(75)),
        ("groupId", Long),
        ("companyId", Long),
        ("userId", Long),
        ("createDate", Date),
        ("modifiedDate", Date),
        ("dossierId", Long),
        ("referenceUid", Varchar(75)),
        ("dossierTemplateNo", Varchar(255)),
        ("dossierPartNo", Varchar(255)),
        ("dossierPartType", Int),
        ("fileTemplateNo", Varchar(255)),
        ("displayName", Varchar(500)),
        ("fileEntryId", Long),
        ("original", Bool),
        ("eForm", Bool),
        ("isNew", Bool),
        ("removed", Bool),
        ("deliverableCode", Varchar(255)),
    ],
};

/// A dossier's fees: one row per fee request (OpenCPS's pay-gate modules set `paymentStatus` 5
/// and the `paymentMethod` when a payment is confirmed).
pub(crate) const PAYMENT: Table = Table {
    name: "opencps_paymentfile",
    columns: &[
        ("paymentFileId", Long),
        ("uuid_", Varchar(75)),
        ("groupId", Long),
        ("companyId", Long),
        ("userId", Long),
        ("createDate", Date),
        ("modifiedDate", Date),
        ("dossierId", Long),
        ("referenceUid", Varchar(75)),
        ("paymentFee", Varchar(500)),
        ("advanceAmount", Long),
        ("feeAmount", Long),
        ("serviceAmount", Long),
        ("shipAmount", Long),
        ("paymentAmount", Long),
        ("paymentNote", Varchar(500)),
        ("paymentStatus", Int),
        ("paymentMethod", Varchar(255)),
    ],
};

pub(crate) const TABLES: [&Table; 7] =
    [&DOSSIER, &ACTION, &PROCESS_STEP, &STATUS_MAPPING, &SERVICE_MAPPING, &FILE, &PAYMENT];

/// Liferay's own indexes on these tables that the profile's look-ups use (the names are
/// OpenCPS's). None of them leads with modifiedDate.
pub(crate) const LIFERAY_INDEXES: &[(&str, &str, &[&str])] = &[
    ("IX_BC4A37EA", "opencps_dossier", &["dossierStatus", "modifiedDate"]),
    ("IX_D4ACCBFA", "opencps_dossier", &["groupId", "dossierId"]),
    ("IX_49AE3BC9", "opencps_dossieraction", &["dossierId", "actionCode"]),
    ("IX_55196C94", "opencps_processstep", &["stepCode", "serviceProcessId"]),
    ("IX_E8CF21E3", "opencps_dossierstatusmapping", &["groupId", "statusCode"]),
    ("IX_46BD81F", "opencps_dossierstatusmapping", &["groupId", "subStatusCode"]),
    ("IX_ADAA235C", "opencps_serviceinfomapping", &["groupId", "serviceCode"]),
    ("IX_A0D470F4", "opencps_dossierfile", &["dossierId", "dossierPartType", "removed"]),
    ("IX_AB66566A", "opencps_paymentfile", &["dossierId", "referenceUid"]),
];

impl Table {
    pub fn create(&self, dialect: Dialect) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (name, ty))| {
                let null = if i == 0 { "not null primary key" } else { "null" };
                format!("{name} {} {null}", ty.sql(dialect))
            })
            .collect();
        format!("create table {} (\n    {}\n)", self.name, columns.join(",\n    "))
    }

    pub fn column(&self, name: &str) -> Option<Ty> {
        self.columns.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }
}

/// The statements that create every table and Liferay's indexes, in order.
pub(crate) fn create_all(dialect: Dialect) -> Vec<String> {
    let mut out: Vec<String> = TABLES.iter().map(|t| t.create(dialect)).collect();
    for (name, table, columns) in LIFERAY_INDEXES {
        out.push(format!("create index {name} on {table} ({})", columns.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liferay_types_per_database() {
        let my = DOSSIER.create(Dialect::MySql);
        assert!(my.contains("dossierId BIGINT not null primary key"), "{my}");
        assert!(my.contains("modifiedDate DATETIME(6) null") && my.contains("online_ TINYINT null"));
        let pg = ACTION.create(Dialect::Postgres);
        assert!(pg.contains("modifiedDate TIMESTAMP null") && pg.contains("pending BOOL null"), "{pg}");
        assert_eq!(create_all(Dialect::MySql).len(), TABLES.len() + LIFERAY_INDEXES.len());
    }
}
