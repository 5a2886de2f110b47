{{ config(severity='warn') }}
-- Relationships from the dossiers to the unit registry and the catalogue: a dossier whose unit
-- has no version in the registry counts for no unit (it rolls up nowhere), and one whose
-- procedure is not in the catalogue has no statutory time limit and no procedure attributes.
-- A warning: the rest of the warehouse is right and is published; the source needs correcting.
select dossier_id, unit_id, procedure_code,
    case
        when unit_id not in (select unit_id from {{ ref('dim_units') }}) then 'unit not in the registry'
        else 'procedure not in the catalogue'
    end as problem
from {{ ref('fct_dossiers') }}
where unit_id not in (select unit_id from {{ ref('dim_units') }})
   or procedure_code not in (select procedure_code from {{ ref('stg_catalogue__procedures') }})
