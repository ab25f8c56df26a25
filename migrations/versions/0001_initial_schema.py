"""Initial schema: land, enterprises, metrics, links, sub-lots, runs, ratings, imports, keys, audit.

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 01:03:30.119255
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import geoalchemy2
from sqlalchemy.dialects import postgresql
from geoalchemy2 import Geometry

revision: str = '0001'
down_revision: Union[str, None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # An external DATABASE_URL may point to a database where PostGIS is installed but not enabled.
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.create_table('api_keys',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('key_hash', sa.Text(), nullable=False, comment='sha256 of the key; the key itself is never stored'),
    sa.Column('role', sa.Text(), nullable=False, comment='public | viewer | analyst | admin'),
    sa.Column('region', sa.Text(), nullable=True, comment='NULL = whole county; else a township'),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("role IN ('public', 'viewer', 'analyst', 'admin')", name='api_keys_role'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('entity', sa.Text(), nullable=True),
    sa.Column('entity_id', sa.Text(), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('data_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False, comment='bumped by every write; ETags and cached counts key on it'),
    sa.Column('changed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('id = 1', name='data_version_single_row'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('enterprise_land',
    sa.Column('uscc', sa.Text(), nullable=False),
    sa.Column('land_area_m2', sa.Float(), nullable=False),
    sa.Column('land_area_mu', sa.Float(), nullable=False),
    sa.Column('parcel_count', sa.Integer(), nullable=False),
    sa.Column('owned_area_m2', sa.Float(), nullable=True),
    sa.Column('leased_in_area_m2', sa.Float(), nullable=True),
    sa.Column('land_class', sa.Text(), nullable=True, comment='I owns+uses all | II owns, leases some out | III rents | none'),
    sa.PrimaryKeyConstraint('uscc')
    )
    op.create_table('evaluation_runs',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('scheme_name', sa.Text(), nullable=False),
    sa.Column('scheme_version', sa.Text(), nullable=False),
    sa.Column('scheme_hash', sa.Text(), nullable=False),
    sa.Column('inputs_fingerprint', sa.Text(), nullable=False),
    sa.Column('run_hash', sa.Text(), nullable=False, comment='scheme + inputs + year: same hash, same results'),
    sa.Column('status', sa.Text(), server_default='draft', nullable=False, comment='running | draft | published | superseded | failed'),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('scheme', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False, comment='the scheme as evaluated'),
    sa.Column('summary', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_evaluation_runs_year'), 'evaluation_runs', ['year'], unique=False)
    op.create_table('import_batches',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('bundle_path', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.Text(), nullable=False, comment="sha256 of the bundle's files"),
    sa.Column('status', sa.Text(), nullable=False, comment='loaded | refused'),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('counts', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('column_map', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('source_crs', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('report_path', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('link_corrections',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('uscc', sa.Text(), nullable=False),
    sa.Column('parcel_code', sa.Text(), nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('share', sa.Float(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('by', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("action IN ('add', 'remove')", name='link_corrections_action'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('uscc', 'parcel_code', name='link_corrections_natural_key')
    )
    op.create_geospatial_table('buildings',
    sa.Column('building_id', sa.Text(), nullable=False, comment='建筑编号'),
    sa.Column('parcel_code', sa.Text(), nullable=True),
    sa.Column('floors', sa.Float(), nullable=True, comment='层数'),
    sa.Column('floor_area_m2', sa.Float(), nullable=True, comment='建筑面积'),
    sa.Column('footprint_m2', sa.Float(), nullable=True),
    sa.Column('attrs', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('batch_id', sa.BigInteger(), nullable=True),
    sa.Column('geom', Geometry(geometry_type='MULTIPOLYGON', srid=4490, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['import_batches.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('building_id')
    )
    op.create_geospatial_index('idx_buildings_geom', 'buildings', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
    op.create_index(op.f('ix_buildings_parcel_code'), 'buildings', ['parcel_code'], unique=False)
    op.create_table('enterprise_ratings',
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('uscc', sa.Text(), nullable=False),
    sa.Column('list_name', sa.Text(), nullable=True),
    sa.Column('industry_group', sa.Text(), nullable=True),
    sa.Column('evaluated', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('excluded_reason', sa.Text(), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('rank', sa.Integer(), nullable=True),
    sa.Column('percentile', sa.Float(), nullable=True),
    sa.Column('band_grade', sa.Text(), nullable=True),
    sa.Column('grade', sa.Text(), nullable=True),
    sa.Column('colour', sa.Text(), nullable=True),
    sa.Column('tax_per_mu', sa.Float(), nullable=True, comment='亩均税收 万元/亩'),
    sa.Column('indicators', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('adjustments', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('explanation', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('warnings', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('land_area_mu', sa.Float(), nullable=True),
    sa.Column('consecutive_d_years', sa.Integer(), nullable=True),
    sa.Column('electricity_surcharge_yuan', sa.Float(), nullable=True, comment='差别电价 for D'),
    sa.Column('electricity_refund_yuan', sa.Float(), nullable=True, comment='refund on leaving D'),
    sa.ForeignKeyConstraint(['run_id'], ['evaluation_runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'uscc')
    )
    op.create_index(op.f('ix_enterprise_ratings_uscc'), 'enterprise_ratings', ['uscc'], unique=False)
    op.create_geospatial_table('enterprises',
    sa.Column('uscc', sa.Text(), nullable=False, comment='统一社会信用代码'),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('industry_code', sa.Text(), nullable=True, comment='GB/T 4754'),
    sa.Column('scale', sa.Text(), nullable=True, comment='规上 | 规下'),
    sa.Column('township', sa.Text(), nullable=True),
    sa.Column('address', sa.Text(), nullable=True),
    sa.Column('founded', sa.Date(), nullable=True),
    sa.Column('flags', sa.Text(), nullable=True, comment='免评, 过渡期 …'),
    sa.Column('coord_sys', sa.Text(), nullable=True, comment="the source coordinates' system"),
    sa.Column('lon_src', sa.Float(), nullable=True),
    sa.Column('lat_src', sa.Float(), nullable=True),
    sa.Column('attrs', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('batch_id', sa.BigInteger(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('geom', Geometry(geometry_type='POINT', srid=4490, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry'), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['import_batches.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('uscc')
    )
    op.create_geospatial_index('idx_enterprises_geom', 'enterprises', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
    op.create_index(op.f('ix_enterprises_industry_code'), 'enterprises', ['industry_code'], unique=False)
    op.create_index(op.f('ix_enterprises_township'), 'enterprises', ['township'], unique=False)
    op.create_table('import_rejects',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('batch_id', sa.BigInteger(), nullable=False),
    sa.Column('file', sa.Text(), nullable=False),
    sa.Column('row', sa.Integer(), nullable=True),
    sa.Column('field', sa.Text(), nullable=True),
    sa.Column('value', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('severity', sa.Text(), nullable=False, comment='error (row rejected) | warning (row kept)'),
    sa.ForeignKeyConstraint(['batch_id'], ['import_batches.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_import_rejects_batch_id'), 'import_rejects', ['batch_id'], unique=False)
    op.create_table('leases',
    sa.Column('lease_key', sa.Text(), nullable=False, comment='natural key: tenant|parcel|landlord|start'),
    sa.Column('tenant_uscc', sa.Text(), nullable=False),
    sa.Column('parcel_code', sa.Text(), nullable=True),
    sa.Column('landlord_uscc', sa.Text(), nullable=True),
    sa.Column('floor_area_m2', sa.Float(), nullable=True),
    sa.Column('land_area_m2', sa.Float(), nullable=True),
    sa.Column('start_date', sa.Date(), nullable=True),
    sa.Column('end_date', sa.Date(), nullable=True),
    sa.Column('attrs', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('batch_id', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['import_batches.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('lease_key')
    )
    op.create_index(op.f('ix_leases_landlord_uscc'), 'leases', ['landlord_uscc'], unique=False)
    op.create_index(op.f('ix_leases_parcel_code'), 'leases', ['parcel_code'], unique=False)
    op.create_index(op.f('ix_leases_tenant_uscc'), 'leases', ['tenant_uscc'], unique=False)
    op.create_table('parcel_ratings',
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('identity_code', sa.Text(), nullable=False),
    sa.Column('list_name', sa.Text(), nullable=True),
    sa.Column('industry_group', sa.Text(), nullable=True),
    sa.Column('evaluated', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('excluded_reason', sa.Text(), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('rank', sa.Integer(), nullable=True),
    sa.Column('percentile', sa.Float(), nullable=True),
    sa.Column('band_grade', sa.Text(), nullable=True),
    sa.Column('grade', sa.Text(), nullable=True),
    sa.Column('colour', sa.Text(), nullable=True),
    sa.Column('tax_per_mu', sa.Float(), nullable=True, comment='亩均税收 万元/亩'),
    sa.Column('indicators', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('adjustments', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('explanation', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('warnings', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('idle', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('low_yield_years', sa.Integer(), nullable=True, comment='consecutive years below the 低产田 threshold'),
    sa.ForeignKeyConstraint(['run_id'], ['evaluation_runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'identity_code')
    )
    op.create_index(op.f('ix_parcel_ratings_identity_code'), 'parcel_ratings', ['identity_code'], unique=False)
    op.create_geospatial_table('parcels',
    sa.Column('identity_code', sa.Text(), nullable=False, comment='宗地身份码'),
    sa.Column('kind', sa.Text(), nullable=False, comment='registered | defacto | defacto_attached'),
    sa.Column('parcel_code', sa.Text(), nullable=True, comment="宗地代码 (own, or the parent's for attached land)"),
    sa.Column('source_parcel_code', sa.Text(), nullable=True, comment='the 宗地代码 an unregistered cadastre row came with'),
    sa.Column('parent_identity_code', sa.Text(), nullable=True, comment='attached de-facto land: its registered parcel'),
    sa.Column('owner_uscc', sa.Text(), nullable=True, comment='权利人统一社会信用代码'),
    sa.Column('owner_name', sa.Text(), nullable=True),
    sa.Column('user_uscc', sa.Text(), nullable=True, comment='de-facto land: the enterprise using it'),
    sa.Column('land_use', sa.Text(), nullable=True),
    sa.Column('township', sa.Text(), nullable=True),
    sa.Column('registered_area_m2', sa.Float(), nullable=True),
    sa.Column('area_m2', sa.Float(), nullable=False),
    sa.Column('area_mu', sa.Float(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('attrs', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False, comment='extra columns kept from the import'),
    sa.Column('batch_id', sa.BigInteger(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('geom', Geometry(geometry_type='MULTIPOLYGON', srid=4490, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.CheckConstraint("kind IN ('registered', 'defacto', 'defacto_attached')", name='parcels_kind'),
    sa.ForeignKeyConstraint(['batch_id'], ['import_batches.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('identity_code')
    )
    op.create_geospatial_index('idx_parcels_geom', 'parcels', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
    op.create_index(op.f('ix_parcels_owner_uscc'), 'parcels', ['owner_uscc'], unique=False)
    op.create_index(op.f('ix_parcels_parcel_code'), 'parcels', ['parcel_code'], unique=False)
    op.create_index(op.f('ix_parcels_source_parcel_code'), 'parcels', ['source_parcel_code'], unique=False)
    op.create_index(op.f('ix_parcels_township'), 'parcels', ['township'], unique=False)
    op.create_table('land_links',
    sa.Column('identity_code', sa.Text(), nullable=False),
    sa.Column('uscc', sa.Text(), nullable=False),
    sa.Column('parcel_code', sa.Text(), nullable=True),
    sa.Column('role', sa.Text(), nullable=False, comment='owner_occupier 自用 | landlord 出租方 | tenant 承租方'),
    sa.Column('method', sa.Text(), nullable=False, comment='owner_code | point_in_polygon | building | snap | lease | correction'),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('distance_m', sa.Float(), nullable=True),
    sa.Column('share', sa.Float(), nullable=True, comment="share of the land's area attributed"),
    sa.Column('attributed_area_m2', sa.Float(), nullable=True),
    sa.Column('attributed_area_mu', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['identity_code'], ['parcels.identity_code'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('identity_code', 'uscc')
    )
    op.create_index(op.f('ix_land_links_uscc'), 'land_links', ['uscc'], unique=False)
    op.create_table('metrics',
    sa.Column('uscc', sa.Text(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('tax_paid', sa.Float(), nullable=True, comment='实缴税金 万元'),
    sa.Column('tax_refund', sa.Float(), nullable=True, comment='税收还原额 万元'),
    sa.Column('value_added', sa.Float(), nullable=True, comment='工业增加值 万元'),
    sa.Column('revenue', sa.Float(), nullable=True, comment='营业收入 万元'),
    sa.Column('output_value', sa.Float(), nullable=True, comment='工业总产值 万元'),
    sa.Column('energy_tce', sa.Float(), nullable=True, comment='综合能耗 吨标煤'),
    sa.Column('emission_t', sa.Float(), nullable=True, comment='排放当量 吨'),
    sa.Column('rd_expense', sa.Float(), nullable=True, comment='研发经费 万元'),
    sa.Column('employees', sa.Float(), nullable=True, comment='从业人员 人'),
    sa.Column('electricity_kwh', sa.Float(), nullable=True, comment='用电量 kWh'),
    sa.Column('meter_id', sa.Text(), nullable=True, comment='电表户号'),
    sa.Column('attrs', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('batch_id', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['import_batches.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['uscc'], ['enterprises.uscc'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('uscc', 'year')
    )
    op.create_index(op.f('ix_metrics_meter_id'), 'metrics', ['meter_id'], unique=False)
    op.create_table('parcel_metrics',
    sa.Column('identity_code', sa.Text(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('tax_paid', sa.Float(), nullable=True, comment='实缴税金 万元'),
    sa.Column('tax_refund', sa.Float(), nullable=True, comment='税收还原额 万元'),
    sa.Column('value_added', sa.Float(), nullable=True, comment='工业增加值 万元'),
    sa.Column('revenue', sa.Float(), nullable=True, comment='营业收入 万元'),
    sa.Column('output_value', sa.Float(), nullable=True, comment='工业总产值 万元'),
    sa.Column('energy_tce', sa.Float(), nullable=True, comment='综合能耗 吨标煤'),
    sa.Column('emission_t', sa.Float(), nullable=True, comment='排放当量 吨'),
    sa.Column('rd_expense', sa.Float(), nullable=True, comment='研发经费 万元'),
    sa.Column('employees', sa.Float(), nullable=True, comment='从业人员 人'),
    sa.Column('electricity_kwh', sa.Float(), nullable=True, comment='用电量 kWh'),
    sa.Column('occupant_count', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['identity_code'], ['parcels.identity_code'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('identity_code', 'year')
    )
    op.create_geospatial_table('sublots',
    sa.Column('identity_code', sa.Text(), nullable=False),
    sa.Column('uscc', sa.Text(), nullable=False),
    sa.Column('share', sa.Float(), nullable=False),
    sa.Column('area_m2', sa.Float(), nullable=False),
    sa.Column('geom', Geometry(geometry_type='MULTIPOLYGON', srid=4490, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.ForeignKeyConstraint(['identity_code'], ['parcels.identity_code'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('identity_code', 'uscc')
    )
    op.create_geospatial_index('idx_sublots_geom', 'sublots', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})


def downgrade() -> None:
    op.drop_geospatial_index('idx_sublots_geom', table_name='sublots', postgresql_using='gist', column_name='geom')
    op.drop_geospatial_table('sublots')
    op.drop_table('parcel_metrics')
    op.drop_index(op.f('ix_metrics_meter_id'), table_name='metrics')
    op.drop_table('metrics')
    op.drop_index(op.f('ix_land_links_uscc'), table_name='land_links')
    op.drop_table('land_links')
    op.drop_index(op.f('ix_parcels_township'), table_name='parcels')
    op.drop_index(op.f('ix_parcels_source_parcel_code'), table_name='parcels')
    op.drop_index(op.f('ix_parcels_parcel_code'), table_name='parcels')
    op.drop_index(op.f('ix_parcels_owner_uscc'), table_name='parcels')
    op.drop_geospatial_index('idx_parcels_geom', table_name='parcels', postgresql_using='gist', column_name='geom')
    op.drop_geospatial_table('parcels')
    op.drop_index(op.f('ix_parcel_ratings_identity_code'), table_name='parcel_ratings')
    op.drop_table('parcel_ratings')
    op.drop_index(op.f('ix_leases_tenant_uscc'), table_name='leases')
    op.drop_index(op.f('ix_leases_parcel_code'), table_name='leases')
    op.drop_index(op.f('ix_leases_landlord_uscc'), table_name='leases')
    op.drop_table('leases')
    op.drop_index(op.f('ix_import_rejects_batch_id'), table_name='import_rejects')
    op.drop_table('import_rejects')
    op.drop_index(op.f('ix_enterprises_township'), table_name='enterprises')
    op.drop_index(op.f('ix_enterprises_industry_code'), table_name='enterprises')
    op.drop_geospatial_index('idx_enterprises_geom', table_name='enterprises', postgresql_using='gist', column_name='geom')
    op.drop_geospatial_table('enterprises')
    op.drop_index(op.f('ix_enterprise_ratings_uscc'), table_name='enterprise_ratings')
    op.drop_table('enterprise_ratings')
    op.drop_index(op.f('ix_buildings_parcel_code'), table_name='buildings')
    op.drop_geospatial_index('idx_buildings_geom', table_name='buildings', postgresql_using='gist', column_name='geom')
    op.drop_geospatial_table('buildings')
    op.drop_table('link_corrections')
    op.drop_table('import_batches')
    op.drop_index(op.f('ix_evaluation_runs_year'), table_name='evaluation_runs')
    op.drop_table('evaluation_runs')
    op.drop_table('enterprise_land')
    op.drop_table('data_version')
    op.drop_table('audit_log')
    op.drop_table('api_keys')
