//! The national procedure catalogue (thủ tục hành chính) both mocks share, and the
//! provincial agencies the simulator files dossiers under.

/// One national procedure, as `LayThuTuc` returns it, plus its legal processing time.
#[derive(Debug, Clone, Copy)]
pub struct Procedure {
    pub code: &'static str,
    pub name: &'static str,
    pub field_code: &'static str,
    pub field_name: &'static str,
    /// Days from intake to the promised return date (NgayHenTra).
    pub days: i64,
}

const fn p(
    code: &'static str,
    name: &'static str,
    field_code: &'static str,
    field_name: &'static str,
    days: i64,
) -> Procedure {
    Procedure { code, name, field_code, field_name, days }
}

pub const PROCEDURES: &[Procedure] = &[
    p("1.001193", "Đăng ký khai sinh", "G09-TP09", "Hộ tịch", 1),
    p("1.000894", "Đăng ký kết hôn", "G09-TP09", "Hộ tịch", 5),
    p("1.000656", "Đăng ký khai tử", "G09-TP09", "Hộ tịch", 1),
    p("1.004746", "Đăng ký thay đổi, cải chính, bổ sung thông tin hộ tịch", "G09-TP09", "Hộ tịch", 3),
    p("1.004873", "Cấp Giấy xác nhận tình trạng hôn nhân", "G09-TP09", "Hộ tịch", 3),
    p("2.000635", "Cấp bản sao Trích lục hộ tịch", "G09-TP09", "Hộ tịch", 1),
    p("2.000908", "Chứng thực bản sao từ bản chính giấy tờ, văn bản", "G09-TP02", "Chứng thực", 1),
    p("2.000884", "Chứng thực chữ ký trong các giấy tờ, văn bản", "G09-TP02", "Chứng thực", 1),
    p(
        "2.001035",
        "Chứng thực hợp đồng, giao dịch liên quan đến tài sản là động sản",
        "G09-TP02",
        "Chứng thực",
        2,
    ),
    p("1.001978", "Cấp Phiếu lý lịch tư pháp cho công dân Việt Nam", "G09-TP11", "Lý lịch tư pháp", 10),
    p("1.009994", "Cấp giấy phép xây dựng mới đối với nhà ở riêng lẻ", "G09-XD03", "Hoạt động xây dựng", 15),
    p(
        "1.009995",
        "Cấp giấy phép sửa chữa, cải tạo đối với công trình, nhà ở riêng lẻ",
        "G09-XD03",
        "Hoạt động xây dựng",
        15,
    ),
    p(
        "1.004227",
        "Đăng ký biến động quyền sử dụng đất, quyền sở hữu tài sản gắn liền với đất",
        "G09-TN01",
        "Đất đai",
        10,
    ),
    p(
        "1.004203",
        "Cấp đổi Giấy chứng nhận quyền sử dụng đất, quyền sở hữu nhà ở và tài sản khác gắn liền với đất",
        "G09-TN01",
        "Đất đai",
        7,
    ),
    p("2.000889", "Đăng ký đất đai, tài sản gắn liền với đất lần đầu", "G09-TN01", "Đất đai", 30),
    p(
        "2.001610",
        "Đăng ký thành lập doanh nghiệp tư nhân",
        "G09-KH01",
        "Thành lập và hoạt động doanh nghiệp",
        3,
    ),
    p(
        "2.002035",
        "Đăng ký thành lập công ty trách nhiệm hữu hạn một thành viên",
        "G09-KH01",
        "Thành lập và hoạt động doanh nghiệp",
        3,
    ),
    p(
        "1.005386",
        "Đăng ký thay đổi nội dung đăng ký doanh nghiệp",
        "G09-KH01",
        "Thành lập và hoạt động doanh nghiệp",
        3,
    ),
    p(
        "2.000720",
        "Đăng ký thành lập hộ kinh doanh",
        "G09-KH02",
        "Thành lập và hoạt động của hộ kinh doanh",
        3,
    ),
    p(
        "1.001612",
        "Cấp Giấy chứng nhận cơ sở đủ điều kiện an toàn thực phẩm",
        "G09-YT05",
        "An toàn thực phẩm",
        20,
    ),
    p("1.002804", "Đổi giấy phép lái xe do ngành Giao thông vận tải cấp", "G09-GT01", "Đường bộ", 5),
    p("1.002835", "Cấp Giấy phép liên vận giữa Việt Nam và Campuchia", "G09-GT01", "Đường bộ", 2),
    p(
        "1.000105",
        "Cấp giấy phép lao động cho người lao động nước ngoài làm việc tại Việt Nam",
        "G09-LD03",
        "Việc làm",
        5,
    ),
    p("1.001823", "Giải quyết hưởng trợ cấp thất nghiệp", "G09-LD03", "Việc làm", 20),
    p(
        "1.001776",
        "Thực hiện, điều chỉnh, thôi hưởng trợ cấp xã hội hằng tháng",
        "G09-LD07",
        "Bảo trợ xã hội",
        20,
    ),
    p("1.004443", "Cho phép trường mầm non hoạt động giáo dục", "G09-GD01", "Giáo dục và Đào tạo", 20),
    p("1.005090", "Chuyển trường đối với học sinh trung học cơ sở", "G09-GD01", "Giáo dục và Đào tạo", 3),
    p("1.003010", "Cấp chứng chỉ hành nghề khám bệnh, chữa bệnh", "G09-YT01", "Khám bệnh, chữa bệnh", 30),
    p(
        "1.001055",
        "Cấp giấy phép hoạt động đối với phòng khám chuyên khoa",
        "G09-YT01",
        "Khám bệnh, chữa bệnh",
        45,
    ),
    p("1.004614", "Cấp Giấy phép bán lẻ sản phẩm rượu", "G09-CT04", "Lưu thông hàng hóa trong nước", 10),
    p("2.000620", "Cấp Giấy phép bán lẻ sản phẩm thuốc lá", "G09-CT04", "Lưu thông hàng hóa trong nước", 15),
    p(
        "1.004249",
        "Thẩm định, phê duyệt phương án cải tạo, phục hồi môi trường",
        "G09-TN04",
        "Môi trường",
        30,
    ),
    p(
        "1.008894",
        "Đăng ký, cấp biển số xe mô tô, xe gắn máy",
        "G09-CA02",
        "Đăng ký, quản lý phương tiện giao thông",
        2,
    ),
    p("1.010053", "Xác nhận thông tin về cư trú", "G09-CA01", "Đăng ký, quản lý cư trú", 1),
    p("2.002156", "Giải quyết khiếu nại lần đầu", "G09-TT01", "Giải quyết khiếu nại", 30),
    p("1.003622", "Công nhận hộ nghèo, hộ cận nghèo phát sinh trong năm", "G09-LD07", "Bảo trợ xã hội", 10),
];

/// Procedure codes the provincial simulator uses that the national catalogue does not know.
pub(crate) const UNKNOWN_PROCEDURE_CODES: &[&str] = &["9.990001", "9.990002", "3.000777"];

/// The unit `LayThuTuc` gives a procedure's duration in: the long ones count working days.
/// (The simulator's NgayHenTra counts calendar days; it only matters for dossiers without one.)
pub(crate) fn duration_unit(p: &Procedure) -> &'static str {
    if p.days >= 10 { "Ngày làm việc" } else { "Ngày" }
}

pub fn find(code: &str) -> Option<&'static Procedure> {
    PROCEDURES.iter().find(|p| p.code == code)
}

/// A provincial agency (đơn vị) that receives and processes dossiers.
#[derive(Debug, Clone, Copy)]
pub struct Agency {
    pub code: &'static str,
    pub name: &'static str,
    /// Width of the MaHoSo sequence this agency's software writes (4 or 5 digits).
    pub sequence_width: usize,
}

const fn a(code: &'static str, name: &'static str, sequence_width: usize) -> Agency {
    Agency { code, name, sequence_width }
}

/// The simulated province's unit code; its last segment is the province.
pub(crate) const PROVINCE_UNIT: &str = "000.00.00.H58";

pub(crate) const AGENCIES: &[Agency] = &[
    a("000.00.15.H58", "Sở Tư pháp", 4),
    a("000.00.10.H58", "Sở Kế hoạch và Đầu tư", 5),
    a("000.00.16.H58", "Sở Xây dựng", 4),
    a("000.00.17.H58", "Sở Tài nguyên và Môi trường", 4),
    a("000.00.12.H58", "Sở Y tế", 5),
    a("000.00.21.H58", "Sở Lao động - Thương binh và Xã hội", 4),
    a("000.00.13.H58", "Sở Giao thông vận tải", 5),
    a("000.20.31.H58", "UBND huyện Tân Châu", 4),
    a("000.21.31.H58", "UBND huyện Dương Minh Châu", 4),
    a("000.22.31.H58", "UBND thị xã Hòa Thành", 5),
    a("001.20.31.H58", "UBND xã Tân Hưng", 4),
    a("002.21.31.H58", "UBND phường Long Hoa", 4),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{mahoso::province_of, text::is_normalized};

    #[test]
    fn catalogue_is_large_unique_and_nfc() {
        assert!(PROCEDURES.len() >= 30);
        let mut codes: Vec<_> = PROCEDURES.iter().map(|p| p.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), PROCEDURES.len());
        for p in PROCEDURES {
            assert!(is_normalized(p.name) && is_normalized(p.field_name), "{}", p.code);
            assert!(p.days > 0);
        }
        for code in UNKNOWN_PROCEDURE_CODES {
            assert!(find(code).is_none());
        }
    }

    #[test]
    fn agencies_are_in_the_province() {
        for a in AGENCIES {
            assert_eq!(province_of(a.code), province_of(PROVINCE_UNIT));
            assert!(a.sequence_width == 4 || a.sequence_width == 5);
        }
    }
}
