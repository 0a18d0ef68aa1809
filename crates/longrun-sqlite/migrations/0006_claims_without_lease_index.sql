-- `claims` loses its index on lease expiry. Every claim inserted an entry and every change that
-- wrote a claim out deleted it: two of the dozen or so b-tree writes a job costs the single
-- writer. Its one reader is the maintenance pass, which also reads `claims` whole to write out
-- claims a second old (by `started_ns`, unindexed), so `claims` holds about a second's claims
-- and a scan of it for expired leases costs what that pass already spends. Measured on a
-- 100,000-job drain (`longrun-bench throughput --store sqlite --worker in-process
-- --prefetch 256 --n 100000`, alternating builds, medians of five): 53,214 → 59,682 and
-- 52,038 → 56,563 jobs/s.
DROP INDEX claims_leases;
