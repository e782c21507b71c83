# Lời của dvc-sync cho người đọc, bằng tiếng Việt. Mỗi thông điệp ở đây có bản tương ứng trong
# en.ftl với cùng các đối số (có kiểm thử). JSON, CSV, tên số đo và trường nhật ký không lấy từ đây.

## Chung

never = chưa có
not-applicable = Không áp dụng
count-dossiers = { $n } hồ sơ

## status

label-health = tình trạng
label-daemon = dịch vụ
label-dossiers = hồ sơ
label-coverage = độ phủ
label-outbox = hàng đợi
label-poll = đọc nguồn
label-source = nguồn
label-push = gửi đi
label-verified = đối chiếu
label-personal = dữ liệu CN
label-workers = tiến trình
label-blank = {""}
health-ok = TỐT
health-degraded = CẦN XỬ LÝ
health-failing = ĐANG LỖI
daemon-running = đang chạy
daemon-stopped = đã dừng
daemon-stale = không phản hồi (lâu không có nhịp)
daemon-pid = { $state } (pid { $pid })
daemon-pid-version = { $state } (pid { $pid }, phiên bản { $version })
daemon-heartbeat = { $daemon }, nhịp gần nhất { $seconds } giây trước
status-dossiers = tổng { $total }: { $in_sync } đã đồng bộ, { $pending } chờ gửi, { $retrying } đang thử lại, { $dead } bị từ chối, { $quarantined } bị cách ly
status-outbox = { $depth } đang chờ, lâu nhất { $seconds } giây
status-poll = thành công gần nhất { $last }
status-poll-cursor = thành công gần nhất { $last }, vị trí đọc { $at } { $id }
status-last-error = lỗi gần nhất: { $error }
status-source = { $name } ({ $kind }): { $dossiers } hồ sơ, { $state }
status-source-retired = đã thôi dùng (không còn trong cấu hình; hồ sơ của nguồn vẫn được đối chiếu)
status-push = thành công gần nhất { $last }, phiên làm mới { $renewals } lần
status-verified = { $percent } % đã đối chiếu với Cổng DVC quốc gia, lần đối chiếu cũ nhất { $days } ngày trước; sai lệch phát hiện { $found }, đã khắc phục { $repaired }; lượt gần nhất { $last }
status-not-sealed = chưa mã hóa (store.key_file)
status-sealed = đã mã hóa (khóa { $keys })
status-sealed-partly = mã hóa từ khi có khóa (khóa { $keys }); dữ liệu lưu trước đó chưa mã hóa cho đến khi chạy `dvc-sync rekey`
status-personal = { $clear } hồ sơ còn giữ dữ liệu cá nhân dạng rõ, { $minimised } đã tối giản; { $quarantined } bản ghi cách ly còn nguyên; nội dung { $sealed }
worker-busy = đang làm
worker-idle = rảnh
worker-failing = đang lỗi
worker-stopped = đã dừng
status-worker-failures = { $name } { $state } ({ $n } lần lỗi liên tiếp)
status-as-recorded = theo lần ghi gần nhất: { $list }
parked-kind = tạm giữ
parked-key = MaHoSo / khóa
parked-reason = lý do
parked-dead = bị từ chối
parked-quarantined = bị cách ly
status-parked-more = ... và { $n } mục nữa (`dvc-sync status --json` liệt kê { $listed } mục đầu)
problem-dead = { $n } hồ sơ bị Cổng DVC quốc gia từ chối; khắc phục nguyên nhân rồi chạy `dvc-sync retry --dead`
problem-unmatched = { $n } hồ sơ bị tạm giữ vì quá trình xử lý trên Cổng quốc gia có bước không khớp với bước nào của ta (đọc lại không kết luận được; chưa gửi lại gì); đối chiếu với Cổng DVC quốc gia rồi chạy `dvc-sync retry --dead`
problem-quarantined = { $n } bản ghi của tỉnh bị cách ly (chưa gửi); sửa tại nguồn hoặc trong status_map rồi chạy `dvc-sync retry --quarantined`
problem-stale = nhịp của dịch vụ đã { $seconds } giây không cập nhật và dịch vụ không dừng bình thường (bị treo hoặc bị tắt)
problem-no-heartbeat = dịch vụ giữ khóa nhưng chưa ghi nhịp nào
problem-outbox-old = thay đổi cũ nhất đã chờ { $seconds } giây trong hàng đợi (ngưỡng { $threshold } giây)
problem-audit-behind = việc đối chiếu chậm so với chu kỳ: có hồ sơ được xác nhận đúng trên Cổng quốc gia lần cuối { $days } ngày trước (national.audit_cycle_days { $cycle }); tăng national.audit_per_second hoặc chạy `dvc-sync audit`
problem-push-refused = { $reason } (docs/operations.md, "The first hour")
problem-source-failing = đọc nguồn { $source } đang lỗi: { $error }
problem-poll-failing = đọc Cổng DVC tỉnh đang lỗi: { $error }
problem-push-failing = gửi lên Cổng DVC quốc gia đang lỗi: { $error }
problem-unreadable = không đọc được trạng thái trong { $path }: { $reason }

## report

report-title = Chỉ số theo Quyết định 766, từ { $from } đến { $to } (tính từ cơ sở dữ liệu tại chỗ)
report-indicator = chỉ số
report-name = {""}
report-share = tỷ lệ
report-fraction = tử số/mẫu số
report-points-header = điểm
report-points = { $percent } % điểm tối đa
report-points-note = điểm: chỉ 3.3 (đủ điểm từ 50 %), 4.2 và 4.3 (đủ điểm từ 80 %) có quy tắc; "-" khi đặc tả không quy định
report-per-agency = theo DonViXuLy (đơn vị xử lý)
report-per-procedure = theo MaTTHC (thủ tục hành chính)
report-dash-note = "-": không có hồ sơ để tính (mẫu số 0); tử số và mẫu số: --csv hoặc --json
report-late-summary = { $total } hồ sơ bị tính trễ hạn theo 2.1; trễ hạn theo nguyên nhân: { $source } do nguồn, { $sync } do đồng bộ (đúng hạn tại nguồn, Cổng DVC quốc gia ghi nhận sau hạn)
report-receipt-summary = hồ sơ trực tuyến tiếp nhận quá thời hạn (8 giờ làm việc): { $source } do nguồn, { $sync } do đồng bộ
report-late-hint = (--late liệt kê từng hồ sơ kèm lý do và nguyên nhân)
report-late-processing = hồ sơ trễ hạn (2.1)
report-late-receipt = hồ sơ trực tuyến tiếp nhận trễ
report-findings = { $n } điểm bất thường làm lệch số liệu dù không trễ hạn (vẫn tính như hiện trạng):
report-not-counted = không tính vào số liệu: { $quarantined } bản ghi bị cách ly (xem status), { $refused } hồ sơ trong kỳ bị Cổng DVC quốc gia từ chối (chỉ tính vào mẫu số của 1.4)
late-not-received = chưa tiếp nhận
cause-source = do nguồn
cause-sync = do đồng bộ
indicator-1-4 = hồ sơ được đồng bộ
indicator-2-1 = giải quyết trước hạn, đúng hạn
indicator-3-3 = nộp trực tuyến
indicator-3-6 = thanh toán trực tuyến
indicator-4-1 = trả kết quả điện tử
indicator-4-2 = số hóa hồ sơ
indicator-4-3 = tái sử dụng dữ liệu số hóa
judgement = { $verdict }: { $how }{ $minus }, so với { $against }
judgement-supplement = , đã trừ { $time } chờ bổ sung
verdict-on-time = đúng hạn
verdict-late = trễ hạn
end-status = kết thúc ở trạng thái { $status } lúc { $at }
end-one-supplement = một lần yêu cầu bổ sung và chưa kết thúc: lần yêu cầu là thời điểm kết thúc
end-many-supplements = trễ hạn: { $n } lần yêu cầu bổ sung và chưa kết thúc
end-open = vẫn đang xử lý khi hết kỳ
against-due = NgayHenTra { $at }
against-duration = thời hạn của thủ tục (không có NgayHenTra) kết thúc lúc { $at }
against-nothing = không có NgayHenTra và không rõ thời hạn của thủ tục: không tính trễ hạn
duration-days = { $n } ngày
duration-hours = { $n } giờ
late-cause-minutes = { $cause }, đồng bộ thêm { $minutes } phút
late-times = kết thúc tính { $end }, hạn { $deadline }
late-receipt-times = nộp lúc { $submitted }, phải tiếp nhận trước { $due }, tiếp nhận { $received }

## trang tổng quan

page-title = dvc-sync: đồng bộ hồ sơ với Cổng Dịch vụ công quốc gia
page-generated = tính lúc { $at } (giờ Việt Nam) từ cơ sở dữ liệu tại chỗ
page-footer = Trang này không có dữ liệu cá nhân: chỉ MaHoSo, thủ tục và đơn vị. Số liệu tính như `dvc-sync report --json` và `status --json`.
page-health = Tình trạng đồng bộ
page-dossiers-total = hồ sơ
page-in-sync = đã đồng bộ
page-coverage = độ phủ (đã cập nhật trên Cổng quốc gia)
page-verified = đã đối chiếu bằng cách đọc lại từ Cổng quốc gia
page-backlog = thay đổi đang chờ gửi
page-backlog-age = thay đổi chờ lâu nhất (độ trễ)
page-seconds = { $n } giây
page-quarantined = bản ghi bị cách ly
page-dead = bị Cổng DVC quốc gia từ chối
page-source = nguồn
page-kind = loại
page-source-dossiers = hồ sơ
page-last-success = lần đọc gần nhất
page-last-error = lỗi gần nhất
page-retired = đã thôi dùng
page-parked = Hồ sơ tạm giữ và lý do
page-parked-total = { $n } mục đang tạm giữ (các giá trị trích dẫn được ẩn)
page-count = số lượng
page-score = Điểm theo Quyết định 766, từ { $from } đến { $to }
page-score-note = Sáu nhóm chỉ số như Cổng DVC quốc gia công bố. Ở đây chỉ tính các chỉ số mà dữ liệu đồng bộ quyết định; phần còn lại do Cổng quốc gia tự tính.
page-group = nhóm
page-points = điểm
page-our-data = dữ liệu của ta quyết định
page-not-ours = không tính được ở đây
page-none-of-ours = không có: nhóm này không tính từ hồ sơ đồng bộ
group-public = Công khai, minh bạch
group-public-not-ours = việc công khai thủ tục và kết quả trên các cổng
group-progress = Tiến độ giải quyết
group-progress-not-ours = số liệu riêng của Hệ thống báo cáo quốc gia
group-online = Dịch vụ công trực tuyến
group-online-not-ours = danh mục dịch vụ cung cấp trực tuyến
group-payment = Thanh toán trực tuyến
group-payment-not-ours = các khoản thanh toán ngoài hồ sơ
group-satisfaction = Mức độ hài lòng
group-satisfaction-not-ours = đánh giá của người dân trên Cổng quốc gia
group-digitisation = Số hóa hồ sơ
group-digitisation-not-ours = tái sử dụng từ các kho dữ liệu quốc gia
page-over-time = Từng chỉ số trong mười hai tháng gần nhất
page-late-chart = hồ sơ trễ hạn theo tháng: xám do nguồn, đỏ do đồng bộ
page-agencies = Theo DonViXuLy, tháng này (đường kẻ: mười hai tháng)
page-late = Hồ sơ trễ hạn trong tháng và nguyên nhân
page-cause = nguyên nhân
page-sync-minutes = số phút đồng bộ làm chậm
page-counted-end = thời điểm kết thúc tính
page-deadline = hạn
page-submitted = nộp lúc
page-receipt-due = hạn tiếp nhận
page-received = tiếp nhận lúc
page-more-late = Chỉ hiện 200 hồ sơ đầu của mỗi danh sách: `dvc-sync report --late` liệt kê đủ.

## check-source

check-label-source = nguồn
check-label-profile = cấu hình
check-label-server = máy chủ
check-label-tls = tls
check-label-time-zone = múi giờ
check-label-index = chỉ mục
check-label-error = lỗi
check-label-read = đã đọc
check-label-warning = cảnh báo
check-label-summary = tóm tắt
check-source-target = { $name }: { $kind } tại { $target }
check-server = { $server } với tài khoản { $user }
check-session-zone = phiên { $zone }
check-read = { $n } hồ sơ đầu tiên trong { $ms } ms
check-source-id = {" "}(mã tại nguồn { $id })
check-no-mahoso = (không có MaHoSo)
check-send = trạng thái { $status }, { $entries } bước xử lý
check-from-catalogue = (lấy từ LayThuTuc)
check-summary = { $send } hồ sơ sẽ được gửi, { $quarantine } hồ sơ sẽ bị cách ly

## status --dossier và tóm tắt của các lệnh vận hành

dossier-unknown = không có hồ sơ { $mahoso } trong cơ sở dữ liệu này: chưa từng đọc được từ nguồn (kiểm tra lại MaHoSo; `dvc-sync status` liệt kê các mục tạm giữ)
dossier-label = hồ sơ
dossier-label-state = trạng thái
dossier-label-local = tại tỉnh
dossier-label-source = nguồn
dossier-label-national = quốc gia
dossier-label-audit = đối chiếu
dossier-label-attempts = số lần gửi
dossier-label-next = lần tới
dossier-label-error = lỗi cuối
dossier-label-quarantine = cách ly
dossier-label-calls = lời gọi
sync-state-in_sync = đã đồng bộ
sync-state-pending = chờ gửi
sync-state-retrying = đang thử lại
sync-state-dead = bị Cổng DVC quốc gia từ chối
sync-state-quarantined = bị cách ly
sync-state-unknown = không rõ
dossier-local = phiên bản { $version } ({ $at }), trạng thái { $status } { $name } (mã tại tỉnh "{ $local }"), { $entries } bước xử lý
dossier-moved-from = , chuyển từ { $source }
dossier-ignored = , bỏ qua { $n } phiên bản sau của bản cũ
dossier-none = chưa có
dossier-national = { $exists }, trạng thái { $status }, thông tin { $fields }, { $entries } bước xử lý đã được ghi nhận
dossier-exists = đã có
dossier-not-created = chưa tạo
dossier-current = đã cập nhật
dossier-behind = chưa cập nhật
dossier-uncertain = , đang xác định kết quả của một lần ghi
dossier-verified = đã đối chiếu lúc { $at }
dossier-verified-before = đã đối chiếu lúc { $at }, trước lần ghi nhận gần nhất
dossier-never-verified = chưa đối chiếu
dossier-read-back = ; lần đọc lại { $at } thấy: { $finding }
dossier-no-calls = chưa gọi Cổng DVC quốc gia lần nào
dossier-calls = { $n } lời gọi gần nhất (mỗi hồ sơ giữ tối đa { $kept })
calls-at = lời gọi Cổng quốc gia (mới nhất trước)
calls-service = dịch vụ
calls-outcome = kết quả
calls-code = mã
calls-message = nội dung gửi hoặc tìm thấy
audit-summary = đã đối chiếu { $audited } hồ sơ (phạm vi { $scope }, { $per_second } lượt/giây): { $verified } khớp, { $drifted } sai lệch, { $failed } không đọc được, { $changed } thay đổi trong lúc đọc
audit-drift = sai lệch { $kinds }; { $repairs } lần sửa đã xếp hàng, { $parked } hồ sơ tạm giữ (quá trình xử lý trên Cổng quốc gia không phải của ta: xem `dvc-sync status`); các hồ sơ:
audit-verified = { $percent } % đã đối chiếu với Cổng DVC quốc gia
retry-summary = đã xếp lại hàng đợi { $dead } hồ sơ bị từ chối; trả { $quarantined } bản ghi bị cách ly để lượt đối soát tới xét lại
reconcile-summary = đã đối soát { $records } bản ghi: { $drift } thay đổi bị bỏ sót khi đọc, { $quarantined } bị cách ly, { $requeued } hồ sơ xếp lại hàng đợi; độ phủ { $coverage }%
backup-summary = đã sao lưu { $dossiers } hồ sơ vào { $path } ({ $bytes } byte, { $seconds } giây, kiểm tra toàn vẹn { $integrity }); khi khôi phục, mỗi hồ sơ được đọc lại trước khi ghi
forget-summary = đã xóa dữ liệu cá nhân của { $dossiers } hồ sơ và { $quarantined } bản ghi cách ly; nhật ký ghi lại việc xóa, không kèm dữ liệu
forget-not-found = không giữ gì của: { $list }
rekey-summary = đã mã hóa { $sealed } giá trị bằng khóa { $key } ({ $already } giá trị đã mã hóa sẵn) trong { $seconds } giây
rekey-vacuumed = ; các trang trống đã được ghi đè (VACUUM)
rekey-not-vacuumed = ; dịch vụ đang chạy: các trang trống cũ sẽ được ghi đè khi chạy rekey lúc dịch vụ dừng
rekey-wal = ; WAL đang được dùng và còn giữ các trang cũ cho đến khi bị ghi đè (chạy lại rekey khi dịch vụ dừng)

## demo

demo-title = dvc-sync chạy thử: { $seconds } giây
demo-label-dossiers = hồ sơ
demo-label-history = bước xử lý
demo-label-coverage = độ phủ
demo-label-quarantined = bị cách ly
demo-label-refused = bị từ chối
demo-label-faults = sự cố đã vượt qua
demo-label-retries = thử lại
demo-label-lag = độ trễ
demo-label-throughput = thông lượng
demo-label-verdict = kết luận
demo-label-766 = Quyết định 766
demo-dossiers = { $filed } hồ sơ nộp, { $valid } hợp lệ, { $changes } thay đổi
demo-history = { $provincial } tại tỉnh, { $national } trên Cổng DVC quốc gia
demo-coverage = { $percent } % hồ sơ hợp lệ đã cập nhật trên Cổng quốc gia (số của dịch vụ, { $daemon } %, tính cả hồ sơ bị từ chối là chưa cập nhật)
demo-as-injected = đúng như đã cài vào
demo-not-as-injected = KHÔNG đúng như đã cài vào
demo-faults = { $total }: { $national }; làm mới phiên { $sessions } lần; { $pages } trang của tỉnh bị lỗi
demo-retries = { $retries } (và { $read_backs } lần đọc lại các lần ghi chưa rõ kết quả)
demo-lag = p50 { $p50 }, p99 { $p99 } (từ khi tỉnh thay đổi đến khi Cổng quốc gia ghi nhận)
demo-throughput = { $dossiers } hồ sơ/giây được đồng bộ, { $items } mục/giây lên Cổng quốc gia
demo-verdict = mất { $lost }, trùng { $duplicated }, sai thứ tự { $out_of_order }: { $kept }
demo-promise-kept = GIỮ ĐÚNG CAM KẾT
demo-promise-broken = KHÔNG GIỮ ĐƯỢC CAM KẾT
demo-766 = từ { $from } đến { $to }: dvc-sync report (tại chỗ) / số liệu của phía quốc gia
demo-agree = hai bên khớp từng con số (1.4: phía quốc gia chỉ đếm hồ sơ mình có)
demo-disagree = HAI BÊN KHÔNG KHỚP
merger-source = nguồn { $name } ({ $unit }): quản lý { $dossiers } hồ sơ; { $synchronized }/{ $valid } hồ sơ hợp lệ đã cập nhật trên Cổng quốc gia
merger-summary = chuyển khi chuyển đổi hệ thống { $moved }; bỏ qua phiên bản cũ { $ignored }; cách ly { $quarantined }; trùng { $duplicates }, sai thứ tự { $out_of_order }, lùi trạng thái { $regressions }; { $seconds } giây
merger-kept = kết luận: giữ đúng cam kết (không mất, không trùng, không lùi trạng thái, không đổi mã)
merger-not-kept = kết luận: KHÔNG giữ được cam kết

## cấu hình

config-invalid = cấu hình không hợp lệ ({ $n } lỗi):
cfg-set-by-env = (đặt bằng biến môi trường { $var })
cfg-merge = không ghép được cấu hình: { $detail }
cfg-file-missing = không đọc được tệp cấu hình: tệp không tồn tại
cfg-file-unreadable = không đọc được tệp cấu hình: { $detail }
cfg-toml-syntax = dòng { $line }, cột { $column }: lỗi cú pháp TOML: { $detail } (không hiển thị nội dung dòng vì có thể chứa thông tin bí mật)
cfg-toml-syntax-key = dòng { $line }, cột { $column } (khóa { $key }): lỗi cú pháp TOML: { $detail } (không hiển thị nội dung dòng vì có thể chứa thông tin bí mật)
cfg-expected = cần { $wanted ->
    [text] văn bản trong dấu ngoặc kép
    [integer] một số nguyên
    [number] một số
   *[bool] true hoặc false
}, không phải { $given ->
    [boolean] giá trị true/false
    [integer] số nguyên
    [float] số có phần thập phân hoặc số mũ
    [not-one] văn bản không chuyển được sang kiểu đó
    [table] một bảng
    [list] một danh sách
   *[nothing] giá trị rỗng
}
cfg-expected-detail = cần { $what ->
    [string] một chuỗi văn bản
    [bool] true hoặc false
    [number] một số
   *[integer] một số nguyên
} ({ $detail })
cfg-cannot-read = không đọc được: { $detail }
cfg-seconds-zero-or-more = phải từ 0 giây trở lên
cfg-seconds-positive = phải lớn hơn 0 giây
cfg-seconds-max = không được quá { $max } giây (30 ngày)
cfg-seconds-within = phải từ { $min } đến { $max } giây ({ $why ->
    [poll] ngắn hơn sẽ dồn dập truy vấn vào hệ thống nguồn; dài hơn thì quá chậm cho một dịch vụ chạy nền
   *[drain] TimeoutStopSec của unit phải lớn hơn giá trị này, nếu không systemd sẽ buộc dừng tiến trình khi đang gửi nốt
})
cfg-count-within = phải từ { $min } đến { $max }, không phải { $value }
cfg-url-scheme = { $value } phải là URL http:// hoặc https:// có tên máy chủ
cfg-url-invalid = { $value } không phải URL: { $detail }
cfg-not-a-file = { $path } không phải tệp đọc được
cfg-no-pem = { $path } không chứa chứng thư PEM nào (-----BEGIN CERTIFICATE-----)
cfg-secret-both = chỉ đặt { $key } hoặc { $file }, không đặt cả hai
cfg-required-or = bắt buộc (hoặc { $file })
cfg-required = bắt buộc
cfg-required-oauth2 = bắt buộc khi national.auth = "oauth2"
cfg-auth = phải là "session" hoặc "oauth2", không phải { $value }
cfg-retry-max = không được nhỏ hơn retry_initial_seconds
cfg-status-map = cần một bảng dạng trạng thái địa phương = mã quốc gia ({ $detail })
cfg-status-code = phải là mã trạng thái quốc gia từ 1 đến 10, không phải { $value }
cfg-empty = không được để trống
cfg-offset = { $value } không phải độ lệch múi giờ dạng +07:00
cfg-timezone = { $value } không phải múi giờ ({ $detail })
cfg-sql-scheme = phải bắt đầu bằng mysql://, mariadb:// hoặc postgres:// (chưa hỗ trợ SQL Server)
cfg-sql-url = không phải URL dạng mysql://user:password@host:3306/database (mật khẩu có @, : hoặc / phải mã hóa phần trăm)
cfg-sql-profile = bắt buộc khi kind = "sql" (tên có sẵn như "opencps-v2", hoặc một đường dẫn)
cfg-document-url = phải bắt đầu bằng https:// hoặc http://
cfg-previous-key = chỉ dùng khi xoay vòng khóa sang store.key_file, nhưng store.key_file chưa được đặt
cfg-key-short = { $path } có { $len } byte; khóa cần ít nhất { $min } byte ngẫu nhiên (head -c 32 /dev/urandom > FILE)
cfg-provincial-and-sources = đặt cả [provincial] lẫn [sources.*]: tỉnh sau sáp nhập khai báo mọi nguồn trong [sources.<tên>] (các khóa [provincial] cũ chuyển vào một nguồn, ví dụ [sources.provincial])
cfg-source-name = tên nguồn chỉ gồm chữ thường, chữ số, - và _ (tên này dùng làm nhãn metric)
cfg-supersedes-cycle = { $name } thay thế chính nó qua { $through }: quyền quản lý hồ sơ chỉ chuyển một chiều
cfg-kind = phải là "http" hoặc "sql", không phải { $value }
cfg-not-another-source = { $value } không phải tên của một nguồn khác
cfg-list = cần danh sách văn bản trong dấu ngoặc kép, ví dụ ["a", "b"]
cfg-unit-code = { $value } không phải mã đơn vị dạng "000.00.00.H58"
cfg-predecessor-self = { $code } chính là national.madonvi
cfg-audit-rate = phải từ 0 (tắt) đến 1000 lượt tra cứu mỗi giây
cfg-audit-cycle = phải lớn hơn 0 và tối đa 3650 ngày
cfg-log-format = phải là "json" hoặc "pretty", không phải { $value }
cfg-listen = { $value } không phải địa chỉ dạng 127.0.0.1:9187
cfg-token-short = mã truy cập phải có ít nhất 16 ký tự
cfg-periods-overlap = các khoảng giờ chồng lên nhau
cfg-periods-none = phải có ít nhất một khoảng giờ dạng "07:30-11:30"
cfg-period-invalid = { $value } không phải khoảng giờ dạng "07:30-11:30"
cfg-period-backwards = { $value } kết thúc trước khi bắt đầu
cfg-weekday = { $value } không phải thứ trong tuần dạng "mon" .. "sun"
cfg-date = { $value } không phải ngày dạng "2026-09-02"
cfg-receipt-hours = phải lớn hơn 0 và tối đa 1000 giờ làm việc
cfg-heartbeat = phải ngắn hơn daemon.stale_heartbeat_seconds, nếu không dịch vụ đang chạy sẽ bị coi là không phản hồi
cfg-unknown-key = khóa không được hỗ trợ (xem mọi khóa trong config/default.toml)
cfg-secret-unreadable = không đọc được { $path }: { $detail }
cfg-secret-exposed = nhóm hoặc người khác đọc được { $path } (quyền { $mode }); hãy chmod 600
cfg-secret-not-utf8 = { $path } không phải văn bản UTF-8
cfg-secret-empty = { $path } là tệp rỗng
cfg-digest-key = khóa băm đặt cạnh cơ sở dữ liệu, { $path }: { $detail }
check-config-file = tệp cấu hình: { $path }
check-config-no-file = không có tệp cấu hình ({ $path } không tồn tại): dùng giá trị mặc định và biến môi trường
check-config-credentials = thông tin xác thực lấy từ { $path }

## --help (bản tiếng Anh trong en.ftl chính là chú thích trong src/cli.rs)

help-usage = Cách dùng
help-heading-commands = Lệnh
help-heading-options = Tùy chọn
help-heading-arguments = Đối số
help-default = mặc định
help-values = giá trị hợp lệ
help-flag-help = In hướng dẫn
help-flag-version = In phiên bản
help-about-help = In hướng dẫn này hoặc hướng dẫn của lệnh đã nêu
help-arg-help-command = Lệnh cần xem hướng dẫn
help-about-root = Đồng bộ hồ sơ của hệ thống một cửa cấp tỉnh lên Cổng Dịch vụ công quốc gia và giữ cho hai bên luôn khớp
help-arg-root-config = Tệp cấu hình [mặc định: /etc/dvc-sync/dvc-sync.toml nếu có, nếu không thì các giá trị có sẵn]
help-arg-root-lang = Ngôn ngữ của những gì in ra cho người đọc (JSON, CSV và nhật ký không đổi) [mặc định: theo locale (LC_ALL, LC_MESSAGES, LANG) nếu là tiếng Việt, nếu không thì tiếng Anh]
help-about-run = Chạy dịch vụ đến khi nhận SIGTERM hoặc SIGINT (mã thoát 0 khi đã dừng sạch sau khi xử lý xong việc dở dang, 75 khi dừng do SIGHUP để khởi động lại; 78 cấu hình sai, 1 lỗi nghiêm trọng)
help-about-status = Tình trạng đồng bộ, đọc từ cơ sở dữ liệu (mã thoát 0 tốt, 1 cần xử lý, 2 không đọc được)
help-arg-status-json = JSON với tên trường cố định
help-arg-status-dossier = Một hồ sơ: trạng thái ở tỉnh và trên Cổng quốc gia, tình trạng đồng bộ, số lần gửi, lỗi gần nhất, quá trình xử lý
help-about-check-config = Kiểm tra cấu hình và in ra với các thông tin bí mật được che (mã thoát 78 khi không hợp lệ)
help-arg-check-config-credentials = Đọc các bí mật từ thư mục này, như unit systemd chuyển giao (national-password, provincial-database-url, ...) [mặc định: $CREDENTIALS_DIRECTORY]
help-about-check-source = Đọc các bản ghi đầu tiên của nguồn dữ liệu tỉnh theo cấu hình và cho xem từng bản ghi sẽ được gửi đi thế nào, hoặc vì sao bị cách ly (mã thoát 0 tất cả sẽ được gửi, 1 có bản ghi bị cách ly, 2 không đọc được nguồn, 78 cấu hình sai)
help-arg-check-source-limit = Số hồ sơ cần đọc, tính từ hồ sơ đầu tiên
help-arg-check-source-json = JSON thay cho văn bản
help-arg-check-source-show_personal = Hiện nguyên họ tên, số định danh, điện thoại và email (mặc định được che)
help-arg-check-source-source = Chỉ nguồn này (`[sources.<tên>]` của tỉnh sau sáp nhập); mặc định là mọi nguồn
help-about-retry = Đưa lại vào hàng đợi những gì đang bị giữ: hồ sơ bị từ chối và bản ghi bị cách ly (cả hai khi không có cờ nào)
help-arg-retry-dead = Hồ sơ bị Cổng DVC quốc gia từ chối
help-arg-retry-quarantined = Bản ghi bị cách ly tại chỗ (được xét lại ở lượt đối soát đầy đủ tiếp theo)
help-arg-retry-mahoso = Chỉ những hồ sơ này (MaHoSo, hoặc khóa cách ly)
help-about-reconcile = Chạy ngay một lượt đối soát đầy đủ (do dịch vụ đang chạy thực hiện, nếu có)
help-arg-reconcile-json = In báo cáo dạng JSON
help-about-audit = Đọc lại hồ sơ từ Cổng DVC quốc gia ngay bây giờ và bổ sung những gì bị mất (do dịch vụ đang chạy thực hiện, nếu có; mã thoát 0 không sai lệch, 1 có sai lệch hoặc lỗi nghiêm trọng, 69 không đọc lại được gì, 78 cấu hình sai hoặc thiếu tài khoản Cổng quốc gia)
help-arg-audit-all = Mọi hồ sơ đã đồng bộ (mặc định: phần đến hạn kiểm tra tiếp theo, tối thiểu tương đương một ngày)
help-arg-audit-json = In báo cáo dạng JSON
help-arg-audit-per_second = Số lượt tra cứu mỗi giây cho lượt này [mặc định: national.audit_per_second, hoặc 1 khi giá trị đó là 0]
help-about-report = Các chỉ số theo Quyết định 766 tính từ cơ sở dữ liệu tại chỗ cho một kỳ: toàn tỉnh, theo DonViXuLy và theo thủ tục (chỉ đọc: dịch vụ vẫn có thể chạy; mã thoát 0 đã in, 2 không đọc được cơ sở dữ liệu, 64 kỳ không hợp lệ)
help-arg-report-from = Ngày đầu kỳ, YYYY-MM-DD [mặc định: ngày 1 của tháng chứa --to]
help-arg-report-to = Ngày cuối kỳ, YYYY-MM-DD [mặc định: hôm nay]
help-arg-report-month = Cả một tháng, YYYY-MM [mặc định khi không cho ngày nào: tháng hiện tại]
help-arg-report-late = Liệt kê các hồ sơ bị tính trễ hạn theo chỉ số 2.1, kèm lý do
help-arg-report-json = JSON với tên trường cố định
help-arg-report-csv = CSV cho bảng tính (với --late: các hồ sơ trễ hạn)
help-about-backup = Bản sao nhất quán của cơ sở dữ liệu đang dùng, an toàn khi dịch vụ đang chạy (mã thoát 0 đã ghi và kiểm tra, 1 không)
help-arg-backup-path = Nơi ghi bản sao (phải chưa tồn tại); tạo với quyền 0600
help-arg-backup-json = In báo cáo dạng JSON
help-about-forget = Xóa dữ liệu cá nhân của các hồ sơ này khỏi cơ sở dữ liệu tại chỗ, theo một yêu cầu xóa đã thực hiện ở nguồn (ghi nhật ký không kèm dữ liệu; mã thoát 0, 78 thiếu khóa)
help-arg-forget-mahoso = Các hồ sơ (MaHoSo)
help-arg-forget-json = In kết quả dạng JSON
help-about-rekey = Mã hóa mọi nội dung đã lưu bằng store.key_file, ngay cả khi dịch vụ đang chạy (dịch vụ phải dùng cùng khóa) và có thể chạy tiếp nếu bị ngắt (mã thoát 0 đã mã hóa, 78 thiếu khóa hoặc sai khóa)
help-arg-rekey-from = Khóa đang dùng để mã hóa cơ sở dữ liệu, khi đổi sang store.key_file
help-arg-rekey-json = In kết quả dạng JSON
help-about-demo = Toàn bộ hệ thống trong một tiến trình trên loopback: hai cổng mô phỏng, dịch vụ, các sự cố, và báo cáo đã đối chiếu (mã thoát 0 chỉ khi không mất, không trùng, không sai thứ tự)
help-arg-demo-dossiers = Số hồ sơ tỉnh tiếp nhận
help-arg-demo-db = Giữ cơ sở dữ liệu ở đây (mặc định: một thư mục tạm)
help-arg-demo-json = In báo cáo dạng JSON
help-arg-demo-seed = Hạt giống (seed) của mô phỏng và các sự cố
help-arg-demo-merger = Tỉnh sau sáp nhập: hai hệ thống của tỉnh (H58, rồi H20 thay thế) và chuyển đổi hệ thống giữa chừng; kết luận theo từng nguồn
help-about-mock = Chạy cổng mô phỏng (cho kiểm thử, trình diễn và đo hiệu năng; chỉ nghe trên loopback)
help-about-mock-national = Bộ điều hợp tích hợp của Cổng DVCQG: phiên hoặc cổng OAuth2, bốn dịch vụ, các sự cố
help-about-mock-provincial = Hệ thống một cửa của tỉnh được mô phỏng, cung cấp danh sách hồ sơ qua HTTP
help-about-mock-opencps = Cùng tỉnh đó được ghi vào các bảng OpenCPS v2 của một cơ sở dữ liệu MariaDB/MySQL hoặc PostgreSQL thật, cho nguồn SQL (chạy đến khi nhận SIGTERM/SIGINT)
