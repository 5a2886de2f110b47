{{ config(severity='warn') }}
-- Current dossier versions whose supplement list (DanhSachHoSoBoSung) carries a date that does
-- not read as yyyymmddHHMMSS. Such a date counts for nothing (neither in ordering versions nor
-- in the statutory due), so the dossier may be judged on the wrong times: the portal's record
-- needs correcting. A warning: the rest of the warehouse is right and is published.
select dossier_id, unit_id, lake_file, lake_row
from {{ ref('stg_portal__dossiers') }}
where has_unreadable_supplement_date
