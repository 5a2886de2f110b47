{{ config(severity='warn') }}
-- National report rows whose period (KyBaoCao) is not a month (YYYY-MM): DOSSIER_SYNC's
-- denominator is taken per unit and month, so they are not counted. A warning: the rest of the
-- warehouse is right; the report (or the job's reading of it) needs looking at.
select MaDonVi as unit_id, KyBaoCao as period, SoHoSoTiepNhan as received_count, _run_id
from {{ source('national_report', 'received') }}
where not regexp_full_match(coalesce(KyBaoCao, ''), '[0-9]{4}-(0[1-9]|1[0-2])')
