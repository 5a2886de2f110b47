{{ config(severity='warn') }}
-- Relationship from the petitions to the unit registry: a petition whose unit has no version
-- in the registry counts for no unit. A warning: the source needs correcting.
select petition_id, unit_id
from {{ ref('fct_petitions') }}
where unit_id not in (select unit_id from {{ ref('dim_units') }})
