{{ config(materialized='table', tags=['index']) }}
-- One row per methodology version × indicator, read from the versioned files in
-- sql/methodology/ (the build sets DuckDB's file_search_path to the sql/ folder).

select
    * exclude (window_hours),
    -- DOSSIER_SYNC's sync window in hours; SPEC §4's default, 24, when the cell is empty.
    case when indicator = 'DOSSIER_SYNC' then coalesce(window_hours, 24) end as window_hours
from read_csv(
    'methodology/*.csv',
    header = true,
    columns = {
        'methodology': 'VARCHAR', 'effective_from': 'VARCHAR', 'group_code': 'VARCHAR',
        'group_name': 'VARCHAR', 'group_max': 'DOUBLE', 'indicator': 'VARCHAR',
        'max_points': 'DOUBLE', 'target': 'DOUBLE', 'zero_denominator': 'VARCHAR',
        'applies_to': 'VARCHAR', 'period_attribution': 'VARCHAR', 'scored': 'BOOLEAN',
        'numerator': 'VARCHAR', 'denominator': 'VARCHAR', 'window_hours': 'DOUBLE'
    }
)
