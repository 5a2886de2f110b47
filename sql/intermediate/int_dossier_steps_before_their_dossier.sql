{{ config(materialized='incremental', incremental_strategy='append', tags=['facts'],
    pre_hook=["{% if is_incremental() %}SET VARIABLE int_dossier_steps_before_their_dossier_since = (SELECT coalesce(max(seen_through), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}",
              "{% if is_incremental() %}DELETE FROM {{ this }} WHERE dossier_id IN (SELECT dossier_id FROM {{ ref('stg_portal__dossiers') }} WHERE loaded_at <= (SELECT max(dossiers_seen_through) FROM {{ this }})) OR (dossier_id IS NULL AND seen_through < (SELECT max(seen_through) FROM {{ this }})){% endif %}"]) }}
-- One row per step record that landed before any version of its dossier (dossier_id,
-- stepped_at, status_code, loaded_at), kept for fct_dossiers: it reads a changed dossier's steps
-- from the step months where its known steps start and the steps landed since its last build,
-- and a dossier seen for the first time has no known months, so the steps that came before it
-- would be missed.
--
-- Incremental (append): the step records landed since the last build (`seen_through`) whose
-- dossier has no version in staging yet. Each build also appends one row without a dossier that
-- records how far it read (`seen_through`, the steps; `dossiers_seen_through`, the newest landing
-- in stg_portal__dossiers), so that a build that found none still moves on.
--
-- Bounded: before each incremental build, the rows of a dossier whose versions had all landed by
-- the previous build are deleted (that build's fct_dossiers read them, as the dossier was new
-- then; a dossier with a newer version keeps them one build more), and so is every row of how far
-- a build read but the last. What stays is the steps still waiting for their dossier.

with

records as not materialized (
    select * from {{ ref('stg_portal__dossier_step_records') }}
    {% if is_incremental() %}
    where loaded_at > getvariable('int_dossier_steps_before_their_dossier_since')
    {% endif %}
),

early as (
    select r.dossier_id, r.stepped_at, r.status_code, r.loaded_at
    from records as r
    where r.dossier_id not in (select dossier_id from {{ ref('stg_portal__dossiers') }})
),

reach as (
    select
        {% if is_incremental() %}
        coalesce((select max(loaded_at) from records), getvariable('int_dossier_steps_before_their_dossier_since'))
        {% else %}
        coalesce((select max(loaded_at) from records), timestamp '0001-01-01')
        {% endif %} as seen_through,
        (select max(loaded_at) from {{ ref('stg_portal__dossiers') }}) as dossiers_seen_through
)

select e.*, r.seen_through, r.dossiers_seen_through
from early as e
cross join reach as r
union all
-- how far this build read (no dossier)
select null, null, null, null, r.seen_through, r.dossiers_seen_through
from reach as r
