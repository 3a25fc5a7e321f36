# The step-level methods' settings of the scenes bench, shared by run.sh (seed 0) and seeds-1-3/run.sh.
# Needs P, the folder of the calibrated profiles.
STEP_SETTINGS="\
etc:;etc:threshold=0.1,0.2;\
etc-plus:;etc-plus:calls=8,10,12,13,17,25;\
ertacache:profile=$P/ertacache_0.1.json,$P/ertacache_0.2.json,$P/ertacache_0.3.json,$P/ertacache_0.4.json,$P/ertacache_0.5.json;\
meancache:calls=10,13,17,25;\
sencache:eps_start=0.05 eps_main=0.2 max_reuse=4;sencache:eps_start=0.1 eps_main=0.5 max_reuse=6;\
sencache:eps_start=0.2 eps_main=1.0 max_reuse=8;\
teacache:threshold=0.1,0.2,0.4,0.8;magcache:threshold=0.06,0.12,0.24,0.48;\
fixed:interval=2,3,4,5;linear:interval=2,3"
