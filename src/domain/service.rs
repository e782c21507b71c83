//! The national portal's four services, by the names its API gives them.

/// A service of the national portal's integration API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// DongBoHoSoMC: create or replace dossiers.
    SyncDossiers,
    /// CapNhatTienDoHoSoMC: append processing history entries.
    AppendHistory,
    /// TraCuuHoSo: a dossier with its history, or an empty result.
    LookUp,
    /// LayThuTuc: a procedure of the national catalogue.
    Procedure,
}

impl Service {
    pub(crate) const ALL: [Service; 4] =
        [Service::SyncDossiers, Service::AppendHistory, Service::LookUp, Service::Procedure];

    /// The name the API uses (the envelope's `service`, the metrics' `service` label).
    pub const fn name(self) -> &'static str {
        match self {
            Service::SyncDossiers => "DongBoHoSoMC",
            Service::AppendHistory => "CapNhatTienDoHoSoMC",
            Service::LookUp => "TraCuuHoSo",
            Service::Procedure => "LayThuTuc",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether it writes to the national copy (a dossier or its history).
    pub const fn writes(self) -> bool {
        matches!(self, Service::SyncDossiers | Service::AppendHistory)
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Service;

    #[test]
    fn names_read_back() {
        for s in Service::ALL {
            assert_eq!(Service::from_name(s.name()), Some(s));
        }
        assert_eq!(Service::from_name("dongbohosomc"), None);
    }
}
