"""The pages' words in Bahasa Malaysia (first, the default) and English."""

from __future__ import annotations

LANGUAGES = ("ms", "en")
DEFAULT_LANGUAGE = "ms"

MESSAGES: dict[str, tuple[str, str]] = {
    # key: (Bahasa Malaysia, English)
    "site": ("roamsign — Tandatangan digital roaming", "roamsign — Roaming digital signatures"),
    "language": ("Bahasa", "Language"),
    "skip": ("Langkau ke kandungan", "Skip to content"),
    "verify_address.title": ("Sahkan alamat e-mel", "Verify your e-mail address"),
    "verify_address.lead": (
        "Tekan butang di bawah untuk mengesahkan alamat e-mel bagi permohonan sijil roaming anda.",
        "Press the button below to confirm the e-mail address of your roaming certificate "
        "application.",
    ),
    "verify_address.submit": ("Sahkan alamat e-mel", "Confirm my e-mail address"),
    "verify_address.done": (
        "Alamat e-mel anda telah disahkan. Permohonan anda kini menunggu kelulusan JDN.",
        "Your e-mail address is confirmed. Your application now awaits JDN's approval.",
    ),
    "set_pin.title": ("Tetapkan PIN sijil roaming", "Set your roaming certificate PIN"),
    "reset_pin.title": ("Tetapkan semula PIN", "Reset your PIN"),
    "set_pin.lead": (
        "Pilih PIN 6 hingga 8 digit yang sukar diteka. Anda akan memasukkannya setiap kali "
        "menandatangani.",
        "Choose a PIN of 6 to 8 digits that is hard to guess. You will enter it with every "
        "signature.",
    ),
    "set_pin.pin": ("PIN baharu", "New PIN"),
    "set_pin.again": ("Ulang PIN baharu", "New PIN again"),
    "set_pin.submit": ("Tetapkan PIN", "Set the PIN"),
    "set_pin.done": (
        "PIN anda telah ditetapkan. Sijil roaming anda sedia untuk menandatangani.",
        "Your PIN is set. Your roaming certificate is ready to sign.",
    ),
    "confirm_email.title": ("Sahkan alamat e-mel baharu", "Confirm your new e-mail address"),
    "confirm_email.lead": (
        "Tekan butang di bawah untuk mula menggunakan alamat e-mel baharu ini.",
        "Press the button below to start using this new e-mail address.",
    ),
    "confirm_email.submit": ("Sahkan alamat baharu", "Confirm the new address"),
    "confirm_email.done": (
        "Alamat e-mel baharu anda kini digunakan. Alamat lama telah dimaklumkan.",
        "Your new e-mail address is now in use. The old address has been told.",
    ),
    "token.missing": (
        "Pautan ini tidak lengkap. Buka pautan penuh daripada e-mel anda.",
        "This link is incomplete. Open the whole link from your e-mail.",
    ),
    "token.expired": (
        "Pautan ini telah tamat tempoh. Minta e-mel baharu daripada pentadbir anda.",
        "This link has expired. Ask your administrator for a new e-mail.",
    ),
    "token.used": (
        "Pautan ini telah digunakan atau digantikan oleh e-mel yang lebih baharu. Ia hanya "
        "boleh digunakan sekali.",
        "This link was already used, or a newer e-mail replaced it. It works only once.",
    ),
    "token.not_valid": (
        "Pautan ini tidak sah. Semak bahawa anda membuka pautan daripada e-mel terkini.",
        "This link is not valid. Check that you opened the link from the latest e-mail.",
    ),
    "error.state": (
        "Langkah ini tidak boleh dibuat sekarang: {detail}",
        "This step cannot be done now: {detail}",
    ),
    "error.busy": (
        "Perkhidmatan sibuk. Cuba sebentar lagi.",
        "The service is busy. Try again in a moment.",
    ),
    "pin.invalid": (
        "PIN mesti 6 hingga 8 digit, bukan digit berulang atau berturutan (contoh 123456).",
        "The PIN must be 6 to 8 digits, not repeated or consecutive digits (such as 123456).",
    ),
    "pin.mismatch": ("Kedua-dua PIN tidak sama.", "The two PINs differ."),
    "pin.same": (
        "PIN baharu mesti berbeza daripada PIN semasa.",
        "The new PIN must differ from the current one.",
    ),
    "csrf.refused": (
        "Borang ini telah tamat tempoh atau tidak datang daripada halaman ini. Muat semula "
        "halaman dan cuba lagi.",
        "This form has expired or did not come from this page. Reload the page and try again.",
    ),
    "not_found": ("Halaman tidak dijumpai.", "Page not found."),
    "signin.title": ("Log masuk", "Sign in"),
    "signin.lead": (
        "Masukkan nombor MyKad anda. Kod OTP akan dihantar ke peranti MyGPKI Mobile atau "
        "e-mel anda.",
        "Enter your MyKad number. An OTP will be sent to your MyGPKI Mobile device or e-mail.",
    ),
    "signin.mykad": ("Nombor MyKad", "MyKad number"),
    "signin.send": ("Hantar kod OTP", "Send the OTP"),
    "signin.mykad_invalid": (
        "Nombor MyKad mesti 12 digit (contoh 850101-14-5555).",
        "The MyKad number must be 12 digits (such as 850101-14-5555).",
    ),
    "signin.no_credential": (
        "Tiada sijil roaming aktif untuk MyKad ini.",
        "There is no active roaming certificate for this MyKad.",
    ),
    "signin.rate_limited": (
        "Terlalu banyak percubaan. Cuba lagi sebentar lagi.",
        "Too many tries. Try again in a while.",
    ),
    "signin.code_lead": (
        "Kod OTP telah dihantar ke {destination}.",
        "The OTP was sent to {destination}.",
    ),
    "signin.otp": ("Kod OTP (6 digit)", "OTP (6 digits)"),
    "signin.pin": ("PIN", "PIN"),
    "signin.submit": ("Log masuk", "Sign in"),
    "signin.otp_invalid": ("Kod OTP ialah 6 digit.", "The OTP is 6 digits."),
    "signin.pin_invalid": ("PIN ialah 6 hingga 8 digit.", "The PIN is 6 to 8 digits."),
    "signin.wrong": (
        "Kod OTP atau PIN tidak betul. Baki cubaan: {remaining}.",
        "The OTP or the PIN is not correct. Tries left: {remaining}.",
    ),
    "signin.start_again": (
        "Kod ini tidak boleh digunakan lagi (tamat tempoh, terkunci atau telah digunakan). "
        "Mulakan semula.",
        "This code can no longer be used (expired, locked or used). Start again.",
    ),
    "signin.locked": (
        "Sijil anda dikunci selepas PIN salah berulang kali. Tetapkan semula PIN anda.",
        "Your certificate is locked after repeated wrong PINs. Reset your PIN.",
    ),
    "signin.again": ("Mulakan semula", "Start again"),
    "me.title": ("Akaun saya", "My account"),
    "me.hello": ("Selamat datang, {name}", "Welcome, {name}"),
    "me.pending": ("Permintaan tandatangan yang menunggu", "Signature requests waiting"),
    "me.none_pending": ("Tiada permintaan yang menunggu.", "No requests waiting."),
    "me.signatures": ("Tandatangan terkini saya", "My recent signatures"),
    "me.none_signed": ("Belum ada tandatangan.", "No signatures yet."),
    "me.document": ("Dokumen", "Document"),
    "me.system": ("Sistem", "System"),
    "me.time": ("Masa", "Time"),
    "me.fingerprint": ("Cap jari dokumen", "Document fingerprint"),
    "me.decline": ("Tolak", "Decline"),
    "me.sign_out": ("Log keluar", "Sign out"),
    "refused": ("Permintaan ditolak", "Request refused"),
    # -- the console (/console/): app/routers/pages/console*.py --------------------------------
    "console.title": ("Konsol pentadbir", "Administrators' console"),
    "console.nav": ("Menu konsol", "Console menu"),
    "console.nav.home": ("Utama", "Home"),
    "console.sign_in.title": ("Log masuk konsol", "Sign in to the console"),
    "console.sign_in.lead": (
        "Untuk pentadbir JDN dan agensi. Masukkan nombor MyKad anda; kod OTP akan dihantar "
        "ke peranti MyGPKI Mobile atau e-mel anda, kemudian masukkan PIN sijil roaming anda.",
        "For JDN and agency administrators. Enter your MyKad number; an OTP will be sent to "
        "your MyGPKI Mobile device or e-mail, then enter your roaming certificate PIN.",
    ),
    "console.sign_out": ("Log keluar", "Sign out"),
    "console.hello": ("Selamat datang, {name}", "Welcome, {name}"),
    "console.role.jdn_admin": ("Pentadbir JDN", "JDN administrator"),
    "console.role.agency_admin": ("Pentadbir agensi", "Agency administrator"),
    "console.home.role_jdn_admin": (
        "Anda pentadbir JDN: semua agensi.",
        "You are a JDN administrator: every agency.",
    ),
    "console.home.role_agency_admin": (
        "Anda pentadbir agensi {agency}: orang agensi ini sahaja.",
        "You are the administrator of agency {agency}: its people only.",
    ),
    "console.jdn_only": (
        "Langkah ini untuk pentadbir JDN sahaja.",
        "This step is for JDN administrators only.",
    ),
    "console.back": ("Kembali", "Back"),
    # -- me2.: the person's certificates, device and contact details (pages/me_account.py)
    "me2.credentials": ("Sijil saya", "My certificates"),
    "me2.no_credentials": ("Tiada sijil.", "No certificates."),
    "me2.medium_roaming": ("Sijil roaming", "Roaming certificate"),
    "me2.medium_token": ("Token", "Token"),
    "me2.medium_softcert": ("Softcert", "Softcert"),
    "me2.status": ("Status", "Status"),
    "me2.status_pending_pin": ("Menunggu PIN", "Waiting for its PIN"),
    "me2.status_active": ("Aktif", "Active"),
    "me2.status_locked": ("Dikunci", "Locked"),
    "me2.status_revoked": ("Dibatalkan", "Revoked"),
    "me2.status_superseded": ("Digantikan", "Replaced"),
    "me2.status_expired": ("Tamat tempoh", "Expired"),
    "me2.valid_from": ("Sah dari", "Valid from"),
    "me2.valid_until": ("Sah hingga", "Valid until"),
    "me2.key_algorithm": ("Algoritma kunci", "Key algorithm"),
    "me2.fingerprint": ("Cap jari sijil (SHA-256)", "Certificate fingerprint (SHA-256)"),
    "me2.download_pem": ("Muat turun (PEM)", "Download (PEM)"),
    "me2.download_der": ("Muat turun (DER, .cer)", "Download (DER, .cer)"),
    "me2.device": ("Peranti saya", "My device"),
    "me2.no_device": (
        "Tiada peranti MyGPKI Mobile yang aktif. Kod OTP anda dihantar melalui e-mel.",
        "No active MyGPKI Mobile device. Your OTPs are sent by e-mail.",
    ),
    "me2.device_model": ("Peranti", "Device"),
    "me2.device_phone": ("Nombor telefon", "Phone number"),
    "me2.device_activated": ("Diaktifkan", "Activated"),
    "me2.device_seen": ("Kali terakhir dilihat", "Last seen"),
    "me2.device_deactivate": ("Nyahaktifkan peranti ini", "Deactivate this device"),
    "me2.device_confirm_title": ("Nyahaktifkan peranti?", "Deactivate the device?"),
    "me2.device_confirm_lead": (
        "Peranti {model} tidak akan menerima kod OTP lagi; kod OTP anda akan dihantar melalui "
        "e-mel. Untuk menggunakannya semula, daftar dan aktifkan aplikasi sekali lagi.",
        "The device {model} will receive no more OTPs; your OTPs will be sent by e-mail. To use "
        "it again, register and activate the app once more.",
    ),
    "me2.device_confirm": ("Ya, nyahaktifkan", "Yes, deactivate it"),
    "me2.cancel": ("Batal", "Cancel"),
    "me2.device_done": (
        "Peranti telah dinyahaktifkan. Kod OTP anda kini dihantar melalui e-mel.",
        "The device is deactivated. Your OTPs now go to your e-mail.",
    ),
    "me2.contact": ("Butiran hubungan", "Contact details"),
    "me2.email_current": ("Alamat e-mel", "E-mail address"),
    "me2.email_pending": ("Menunggu pengesahan", "Waiting for confirmation"),
    "me2.email_change": ("Tukar alamat e-mel", "Change the e-mail address"),
    "me2.email_lead": (
        "Pautan pengesahan akan dihantar ke alamat baharu. Alamat ditukar hanya selepas anda "
        "membuka pautan itu; alamat lama akan dimaklumkan.",
        "A confirmation link will be sent to the new address. The address changes only once "
        "you open that link; the old address will be told.",
    ),
    "me2.email_new": ("Alamat e-mel baharu", "New e-mail address"),
    "me2.email_submit": ("Hantar pautan pengesahan", "Send the confirmation link"),
    "me2.email_invalid": (
        "Masukkan alamat e-mel yang sah (contoh aisyah@jdn.gov.my).",
        "Enter a valid e-mail address (such as aisyah@jdn.gov.my).",
    ),
    "me2.email_same": (
        "Ini alamat e-mel semasa anda.",
        "This is your current e-mail address.",
    ),
    "me2.email_too_many": (
        "Terlalu banyak permintaan hari ini. Cuba lagi esok.",
        "Too many requests today. Try again tomorrow.",
    ),
    "me2.email_refused": (
        "Alamat ini tidak boleh digunakan sekarang.",
        "This address cannot be used now.",
    ),
    "me2.email_sent": (
        "Pautan pengesahan telah dihantar ke alamat baharu. Buka pautan itu untuk menukar "
        "alamat anda.",
        "A confirmation link was sent to the new address. Open it to change your address.",
    ),
    # -- the console's audit trail and dashboard (pages/console_audit.py, console_dashboard.py)
    "console.audit.nav": ("Jejak audit", "Audit trail"),
    "console.audit.title": ("Jejak audit", "Audit trail"),
    "console.audit.chain": ("Pengesahan rantaian", "Chain verification"),
    "console.audit.chain_lead": (
        "Semak bahawa tiada peristiwa diubah, dipadam atau disusun semula. Semakan membaca "
        "seluruh jejak audit, jadi ia mengambil masa pada jejak yang besar.",
        "Check that no event was changed, deleted or reordered. The check reads the whole "
        "audit trail, so it takes a while on a large one.",
    ),
    "console.audit.verify": ("Sahkan rantaian sekarang", "Verify the chain now"),
    "console.audit.intact": (
        "Rantaian utuh: {checked} peristiwa disemak.",
        "The chain is intact: {checked} events checked.",
    ),
    "console.audit.broken": (
        "Rantaian rosak: {breaks} kerosakan dalam {checked} peristiwa. Yang pertama:",
        "The chain is broken: {breaks} breaks in {checked} events. The first:",
    ),
    "console.audit.broken_event": ("Peristiwa", "Event"),
    "console.audit.broken_chain": ("Rantaian", "Chain"),
    "console.audit.broken_reason": ("Sebab", "Reason"),
    "console.audit.busy": (
        "Satu pengesahan sedang berjalan. Cuba sebentar lagi.",
        "A verification is already running. Try again in a moment.",
    ),
    "console.audit.filters": ("Tapis", "Filter"),
    "console.audit.action": ("Tindakan", "Action"),
    "console.audit.since": ("Dari ({zone})", "From ({zone})"),
    "console.audit.until": ("Hingga ({zone})", "Until ({zone})"),
    "console.audit.search": ("Cari", "Search"),
    "console.audit.action_invalid": (
        "Tindakan ialah huruf kecil, digit, titik atau garis bawah (contoh credential.revoked).",
        "An action is lowercase letters, digits, dots or underscores (such as credential.revoked).",
    ),
    "console.audit.time_invalid": (
        "Masukkan tarikh dan masa yang sah.",
        "Enter a valid date and time.",
    ),
    "console.audit.until_before_since": (
        "Masa 'hingga' mesti selepas masa 'dari'.",
        "The 'until' time must come after the 'from' time.",
    ),
    "console.audit.time": ("Masa", "Time"),
    "console.audit.actor": ("Pelaku", "Actor"),
    "console.audit.person": ("Orang", "Person"),
    "console.audit.target": ("Sasaran", "Target"),
    "console.audit.outcome": ("Hasil", "Outcome"),
    "console.audit.details": ("Butiran", "Details"),
    "console.audit.none": ("Tiada peristiwa.", "No events."),
    "console.audit.newest": ("Terbaharu", "Newest"),
    "console.audit.older": ("Lebih lama", "Older"),
    "console.dash.nav": ("Papan pemuka", "Dashboard"),
    "console.dash.title": ("Sejam yang lalu", "The last hour"),
    "console.dash.window": ("Dari {start} hingga {now}", "From {start} to {now}"),
    "console.dash.scope": ("agensi {agency} sahaja", "agency {agency} only"),
    "console.dash.signatures": ("Tandatangan", "Signatures"),
    "console.dash.failed_checks": ("Semakan OTP/PIN gagal", "Failed OTP/PIN checks"),
    "console.dash.locks": ("Sijil dikunci", "Certificates locked"),
    "console.dash.chart": (
        "Tandatangan, semakan gagal dan sijil dikunci setiap 5 minit",
        "Signatures, failed checks and locked certificates per 5 minutes",
    ),
    "console.dash.caption": (
        "Setiap kumpulan bar ialah 5 minit; yang terakhir masih berjalan.",
        "Each group of bars is 5 minutes; the last one is still running.",
    ),
    "console.dash.table": ("Angka setiap 5 minit", "The figures per 5 minutes"),
    "console.dash.bucket": ("Mula", "Starting"),
    "console.dash.backlog": ("Baris gilir e-mel", "E-mail backlog"),
    "console.dash.waiting": ("Menunggu dihantar", "Waiting to be sent"),
    "console.dash.oldest": ("Paling lama menunggu sejak", "Longest waiting since"),
    "console.dash.undelivered": (
        "Tidak dapat dihantar (sejam yang lalu)",
        "Could not be delivered (last hour)",
    ),
    "console.person": ("Orang", "Person"),
    "console.agency": ("Agensi", "Agency"),
    "console.nav.applications": ("Permohonan", "Applications"),
    "console.nav.people": ("Cari orang", "Find a person"),
    "console.nav.enrolments": ("Pindahan pukal", "Bulk move"),
    "console.applications.title": ("Permohonan yang menunggu", "Applications waiting"),
    "console.applications.filter": ("Tapis", "Filter"),
    "console.applications.all": ("Semua", "All"),
    "console.applications.waiting": ("Menunggu", "Waiting for"),
    "console.applications.opened": ("Dibuka", "Opened"),
    "console.applications.approve": ("Luluskan", "Approve"),
    "console.applications.resend": ("Hantar semula e-mel", "Resend the e-mail"),
    "console.applications.approved": (
        "Permohonan diluluskan: sijil dikeluarkan dan e-mel penetapan PIN dihantar.",
        "Application approved: the certificate is issued and the PIN-setup e-mail sent.",
    ),
    "console.applications.resent": (
        "E-mel dihantar semula dengan token baharu (token lama tidak lagi sah).",
        "The e-mail was sent again with a new token (the old one no longer works).",
    ),
    "console.applications.too_many": (
        "Had e-mel untuk orang ini hari ini telah dicapai. Cuba esok.",
        "This person's e-mail limit for today is reached. Try tomorrow.",
    ),
    "console.applications.none": ("Tiada permohonan yang menunggu.", "No applications waiting."),
    "console.applications.more": (
        "Hanya 100 yang tertua ditunjukkan.",
        "Only the 100 oldest are shown.",
    ),
    "console.waiting.verification": ("Pengesahan e-mel", "E-mail verification"),
    "console.waiting.approval": ("Kelulusan JDN", "JDN approval"),
    "console.waiting.pin": ("Penetapan PIN", "PIN setup"),
    "console.origin.portal": ("portal MyGPKI", "MyGPKI portal"),
    "console.origin.jdn_admin": ("JDN", "JDN"),
    "console.origin.enrolment": ("pindahan pukal", "bulk move"),
    "console.application_status.awaiting_email_verification": (
        "menunggu pengesahan e-mel",
        "awaiting e-mail verification",
    ),
    "console.application_status.email_verified": (
        "e-mel disahkan, menunggu kelulusan",
        "e-mail verified, awaiting approval",
    ),
    "console.application_status.approved": ("diluluskan", "approved"),
    "console.people.title": ("Cari orang", "Find a person"),
    "console.people.lead": (
        "Masukkan nombor MyKad orang yang dicari.",
        "Enter the MyKad number of the person you are looking for.",
    ),
    "console.people.find": ("Cari", "Find"),
    "console.people.unknown": (
        "Tiada orang dengan MyKad ini yang boleh anda lihat.",
        "No person with this MyKad that you may see.",
    ),
    "console.people.another": ("Cari orang lain", "Find another person"),
    "console.person.title": ("Orang", "Person"),
    "console.person.email": ("E-mel", "E-mail"),
    "console.person.phone": ("Telefon", "Phone"),
    "console.person.status": ("Status", "Status"),
    "console.person.signing_ok": ("Boleh menandatangani", "May sign"),
    "console.person.held": (
        "Tandatangan ditahan sehingga {until}",
        "Signing held back until {until}",
    ),
    "console.person.failed_checks": (
        "{count} semakan gagal berturut-turut",
        "{count} failed checks in a row",
    ),
    "console.person.credentials": ("Media dan sijil", "Media and credentials"),
    "console.person.medium": ("Medium", "Medium"),
    "console.person.serial": ("Nombor siri", "Serial"),
    "console.person.validity": ("Sah", "Valid"),
    "console.person.pin_failures": ("{count} PIN salah", "{count} wrong PINs"),
    "console.person.no_credentials": ("Tiada media direkodkan.", "No media on record."),
    "console.person.unlock": ("Buka kunci", "Unlock"),
    "console.person.renew": ("Perbaharui", "Renew"),
    "console.person.revoke": ("Batalkan", "Revoke"),
    "console.person.reason": ("Sebab pembatalan (RFC 5280)", "Revocation reason (RFC 5280)"),
    "console.person.choose_reason": ("— pilih sebab —", "— choose a reason —"),
    "console.person.reason_invalid": (
        "Pilih satu sebab pembatalan daripada senarai.",
        "Choose a revocation reason from the list.",
    ),
    "console.person.key_algorithm": ("Algoritma kunci", "Key algorithm"),
    "console.person.algorithm_default": ("lalai", "default"),
    "console.person.algorithm_invalid": (
        "Pilih algoritma daripada senarai.",
        "Choose an algorithm from the list.",
    ),
    "console.person.unlocked": ("Sijil dibuka kunci.", "The credential is unlocked."),
    "console.person.revoked": ("Sijil dibatalkan.", "The credential is revoked."),
    "console.person.renewed": (
        "Sijil baharu dikeluarkan; e-mel penetapan PIN dihantar kepada orang ini.",
        "A new credential is issued; the PIN-setup e-mail was sent to the person.",
    ),
    "console.person.devices": ("Peranti MyGPKI Mobile", "MyGPKI Mobile devices"),
    "console.person.devices_jdn": (
        "Peranti hanya ditunjukkan kepada pentadbir JDN.",
        "Devices are shown to JDN administrators only.",
    ),
    "console.person.device": ("Peranti", "Device"),
    "console.person.seen": ("Kali terakhir dilihat", "Last seen"),
    "console.person.no_devices": ("Tiada peranti.", "No devices."),
    "console.person.applications": ("Permohonan roaming", "Roaming applications"),
    "console.person.no_applications": ("Tiada permohonan.", "No applications."),
    "console.medium.roaming": ("Roaming", "Roaming"),
    "console.medium.token": ("Token", "Token"),
    "console.medium.softcert": ("Softcert", "Softcert"),
    "console.status.pending_pin": ("menunggu PIN", "waiting for its PIN"),
    "console.status.active": ("aktif", "active"),
    "console.status.locked": ("dikunci", "locked"),
    "console.status.revoked": ("dibatalkan", "revoked"),
    "console.status.superseded": ("digantikan", "superseded"),
    "console.status.expired": ("tamat tempoh", "expired"),
    "console.reason.unspecified": ("tidak dinyatakan", "unspecified"),
    "console.reason.keyCompromise": ("kunci terjejas", "key compromise"),
    "console.reason.affiliationChanged": ("pertukaran agensi", "affiliation changed"),
    "console.reason.superseded": ("digantikan", "superseded"),
    "console.reason.cessationOfOperation": ("berhenti operasi", "cessation of operation"),
    "console.reason.privilegeWithdrawn": ("keistimewaan ditarik balik", "privilege withdrawn"),
    "console.enrolments.title": (
        "Pindahan pukal pengguna token ke roaming",
        "Bulk move of token users to roaming",
    ),
    "console.enrolments.lead": (
        "Muat naik fail CSV dengan lajur mykad (atau MyKad dalam lajur pertama). Setiap orang "
        "berdaftar menerima e-mel pengesahan permohonan; orang yang telah memohon atau "
        "menggunakan roaming tidak menerima apa-apa lagi. Selamat dijalankan semula.",
        "Upload a CSV file with a mykad column (or the MyKad in the first column). Each "
        "registered person gets the application's verification e-mail; people who already "
        "applied or use roaming get nothing more. Safe to run again.",
    ),
    "console.enrolments.file": ("Fail CSV", "CSV file"),
    "console.enrolments.upload": ("Muat naik dan mulakan", "Upload and start"),
    "console.enrolments.larger": (
        "Fail melebihi 64 KiB (kira-kira 4,500 orang): gunakan python -m app enrol --csv.",
        "Files over 64 KiB (about 4,500 people): use python -m app enrol --csv.",
    ),
    "console.enrolments.no_file": ("Pilih fail CSV.", "Choose a CSV file."),
    "console.enrolments.empty": (
        "Fail ini tidak mengandungi sebarang MyKad.",
        "This file holds no MyKad.",
    ),
    "console.enrolments.not_csv": (
        "Fail ini bukan fail CSV UTF-8.",
        "This file is not a UTF-8 CSV file.",
    ),
    "console.enrolments.progress": ("Kemajuan", "Progress"),
    "console.enrolments.finished": ("Selesai.", "Done."),
    "console.enrolments.failed": (
        "Terhenti kerana ralat. Yang telah dibuat kekal; muat naik fail yang sama sekali lagi "
        "untuk meneruskan.",
        "Stopped by an error. What was done stays done; upload the same file again to go on.",
    ),
    "console.enrolments.outcome": ("Keputusan", "Outcome"),
    "console.enrolments.count": ("Bilangan", "Count"),
    "console.enrolments.report": (
        "Muat turun laporan setiap baris (CSV)",
        "Download the per-row report (CSV)",
    ),
    "console.enrolments.another": ("Muat naik fail lain", "Upload another file"),
    "console.enrolments.interrupted": (
        "Terhenti: proses pelayan yang menjalankannya telah berhenti. Baris yang telah dibuat "
        "kekal (dalam laporan). Muat naik fail yang sama sekali lagi untuk meneruskan: ia "
        "selamat, orang yang telah dibuat dilaporkan sebagai 'permohonan sedia ada' dan tidak "
        "menerima e-mel kedua.",
        "Stopped: the server process running it has ended. The rows done stay done (in the "
        "report). Upload the same file again to go on: it is safe, the people done already "
        "are reported as 'already applied' and get no second e-mail.",
    ),
    "console.enrolments.unknown_job": (
        "Kerja ini tidak diketahui: ia milik pentadbir lain, atau telah dipadam selepas "
        "tempoh simpanan. Permohonan yang dibuka ada dalam senarai permohonan; memuat naik "
        "fail yang sama sekali lagi adalah selamat.",
        "This job is not known: it is another administrator's, or was deleted after the "
        "retention period. The applications it opened are in the applications list; "
        "uploading the same file again is safe.",
    ),
    "console.outcome.enrolled": (
        "permohonan dibuka, e-mel dihantar",
        "application opened, e-mail sent",
    ),
    "console.outcome.already_enrolled": ("permohonan sedia ada", "already applied"),
    "console.outcome.already_roaming": ("sudah menggunakan roaming", "already roaming"),
    "console.outcome.unknown_person": ("tidak berdaftar", "not registered"),
    "console.outcome.invalid_mykad": ("MyKad tidak sah", "invalid MyKad"),
    "console.outcome.no_email": ("tiada alamat e-mel", "no e-mail address"),
}


def translate(language: str, key: str, **values: str) -> str:
    malay, english = MESSAGES[key]
    text = english if language == "en" else malay
    return text.format(**values) if values else text
