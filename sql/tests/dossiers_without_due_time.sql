{{ config(severity='warn') }}
-- Received, not withdrawn dossiers with no due time at all: no NgayHenTra, and their procedure
-- is not in the catalogue (so no statutory time limit applies). Such a dossier can never be
-- late: ON_TIME_HANDLING counts it on time, finished or open, in the index and the drill-down
-- alike (fct_dossiers.late_since is null). The portal's record or the catalogue needs
-- correcting. A warning: the rest of the warehouse is right and is published.
select dossier_id, unit_id, procedure_code, received_at, finished_at, lake_file, lake_row
from {{ ref('fct_dossiers') }}
where due_at is null and received_at is not null and not is_withdrawn
