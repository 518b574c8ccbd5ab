#!/usr/bin/perl

# Monitoring through the API on a live 3-node cluster: the endpoints NGINX
# Plus clients read carry nginx's real figures (slab statistics of every
# shared zone, stub_status connection and request counters, the outcomes
# of sync_limit_req zones counted in shared memory), and Debian's
# prometheus-nginx-exporter in Plus mode, unchanged, reports the cluster:
# nginxplus_up 1, zone_sync status and per-zone records equal to the API's,
# and limit_req metrics counting what each node passed and rejected.
# The exporter part is skipped when the exporter is not installed.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;

###############################################################################

my ($exporter) = grep { -x } map { "$_/prometheus-nginx-exporter" }
    split /:/, $ENV{PATH};

my $c = Test::Nginx::Cluster->new(3)->has(qw/http stream zone_sync/)
    ->plan(38);

$c->write_file_expand(<<'EOF');

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    keyval_zone  zone=skv:1m sync;
    keyval       $remote_addr $sx zone=skv;

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
        %%ALL_SYNC_SERVERS%%
        zone_sync_interval 10ms;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone  zone=one:1m sync;
    keyval       $arg_k $kv zone=one;

    sync_limit_req_zone $arg_who zone=perip:1m rate=1r/m sync;
    sync_limit_req_zone $arg_who zone=dry:1m rate=1r/m;

    server {
        listen 127.0.0.1:%%NODE_HTTP%% reuseport;

        location /api {
            api;
        }

        location /set {
            set $kv $arg_v;
            return 200 "set";
        }

        location /limited {
            sync_limit_req zone=perip;
            empty_gif;
        }

        location /dry {
            sync_limit_req zone=dry;
            sync_limit_req_dry_run on;
            empty_gif;
        }
    }
}

EOF

$c->run();

###############################################################################

my @all = (0 .. 2);

sub api {
    my ($node, $uri) = @_;
    my ($s, $d) = http_json($c->http_port($node), GET => "/api/9$uri");
    return $s == 200 ? $d : undef;
}

sub status_of {
    my ($r) = @_;
    return $r =~ m!^HTTP/1\.\d (\d+)! ? $1 : 0;
}

ok(wait_for(sub {
    !grep { (api($_, '/stream/zone_sync/') // {})->{status}{nodes_online}
        != 2 } @all
}), 'cluster up');

# listings: what the newest Go client probes before fetching

my $root = api(0, '/');
ok((grep { $_ eq 'slabs' } @$root) && (grep { $_ eq 'workers' } @$root),
    'root lists slabs and workers');
ok((grep { $_ eq 'limit_conns' } @{api(0, '/stream/')})
    && (grep { $_ eq 'zone_sync' } @{api(0, '/stream/')}),
    'stream lists limit_conns and zone_sync');

# slabs: nginx's own statistics of every shared zone

my $slabs = api(0, '/slabs/');
ok((grep { exists $slabs->{$_} } qw/one skv perip dry ngx_stream_zone_sync/)
    == 5, 'slabs of every shared zone');

my $one = $slabs->{one};
my $pages = $one->{pages}{used} + $one->{pages}{free};
ok($pages > 200 && $pages <= 256, "1m zone has $pages pages");
is_deeply([sort { $a <=> $b } keys %{$one->{slots}}],
    [8, 16, 32, 64, 128, 256, 512, 1024, 2048], 'slot sizes');

sub slot_reqs {
    my ($z) = @_;
    my $n = 0;
    $n += $_->{reqs} for values %{$z->{slots}};
    return $n;
}

my $reqs = slot_reqs($one);
my $used = $one->{pages}{used};
for my $i (1 .. 200) {
    $c->http_get(0, "/set?k=key$i&v=" . ('x' x 40));
}
ok(wait_for(sub {
    !grep { (api($_, '/stream/zone_sync/') // {})->{zones}{one}{records_total}
        != 200 } @all
}), '200 records everywhere');

for my $n (@all) {
    my $z = api($n, '/slabs/one');
    ok(slot_reqs($z) >= ($n == 0 ? $reqs : 0) + 200,
        "node $n: slot allocations counted the records");
}
ok(api(0, '/slabs/one')->{pages}{used} >= $used, 'pages used did not shrink');

# connections and requests: nginx's stub_status counters

my $conns = api(0, '/connections');
my $http = api(0, '/http/requests');
$c->http_get(0, '/set?k=c&v=1') for 1 .. 5;
my $conns2 = api(0, '/connections');
my $http2 = api(0, '/http/requests');
ok($conns2->{accepted} >= $conns->{accepted} + 6, 'accepted connections');
is($conns2->{dropped}, 0, 'none dropped');
ok($conns2->{active} >= 1, 'this request is active');
ok($http2->{total} >= $http->{total} + 6, 'requests total');
ok($http2->{current} >= 1, 'this request is current');

# limit_reqs: outcomes counted in each zone's shared memory, per node

my @codes = map { status_of($c->http_get(0, '/limited?who=a')) } 1 .. 5;
is("@codes", '200 503 503 503 503', 'one passed, then rejected');
@codes = map { status_of($c->http_get(0, '/dry?who=a')) } 1 .. 3;
is("@codes", '200 200 200', 'dry run passes everything');

is_deeply(api(0, '/http/limit_reqs/'), {
    perip => { passed => 1, delayed => 0, rejected => 4,
        delayed_dry_run => 0, rejected_dry_run => 0 },
    dry => { passed => 1, delayed => 0, rejected => 0,
        delayed_dry_run => 0, rejected_dry_run => 2 },
}, 'node 0 counted its requests, whichever worker served them');

# node 1 sees node 0's request through sync: its own first one is rejected
is(status_of($c->http_get(1, '/limited?who=a')), 503, 'limit is cluster-wide');
is(api(1, '/http/limit_reqs/perip')->{rejected}, 1, 'node 1 counts its own');
is(api(2, '/http/limit_reqs/perip')->{rejected}, 0, 'node 2 saw none');

# untracked collections are empty, not invented

is_deeply([map { api(0, $_) } qw!/http/caches /http/upstreams
    /stream/server_zones /resolvers /ssl!], [({}) x 5], 'empty collections');
is_deeply(api(0, '/workers/'), [], 'no per-worker figures');

# processes: a crashed worker is respawned and counted; a reload is not a
# respawn

is_deeply([map { api($_, '/processes') } @all], [({ respawned => 0 }) x 3],
    'no respawns yet');
my ($victim) = $c->node(2)->worker_pids();
kill 'KILL', $victim;
ok(wait_for(sub { (api(2, '/processes') // {})->{respawned} == 1 }),
    'the respawned worker is counted');
$c->ignore_log(qr/exited on signal 9/);
ok($c->reload_node(2, wait_old => 1), 'reload');
ok(wait_for(sub { !grep { $_ == $victim } $c->node(2)->worker_pids() }),
    'old workers gone');
is_deeply([map { api($_, '/processes') } @all],
    [{ respawned => 0 }, { respawned => 0 }, { respawned => 1 }],
    'the reload is not a respawn, and the count survives it');
ok(wait_for(sub {
    !grep { (api($_, '/stream/zone_sync/') // {})->{status}{nodes_online}
        != 2 } @all
}), 'cluster whole again');

###############################################################################

# the Prometheus exporter, Plus mode, one per node

SKIP: {
skip 'prometheus-nginx-exporter is not installed', 8 unless $exporter;

for my $n (@all) {
    my $log = $c->testdir() . "/exporter$n.log";
    my @cmd = ($exporter, '-nginx.plus',
        '-nginx.scrape-uri', 'http://127.0.0.1:' . $c->http_port($n) . '/api',
        '-web.listen-address', '127.0.0.1:' . $c->port($n, 90),
        '-nginx.retries', '10', '-nginx.retry-interval', '100ms');
    # its log goes to a file of the test directory, not into the TAP output
    $c->run_daemon(sub {
        open STDERR, '>', $log or die "$log: $!\n";
        open STDOUT, '>&', \*STDERR;
        exec { $cmd[0] } @cmd or die "cannot exec $cmd[0]: $!\n";
    });
}

sub metrics {
    my ($n) = @_;
    my $r = http_get('/metrics', port => $c->port($n, 90)) // '';
    return undef unless status_of($r) == 200;
    my %m;
    for (split /\n/, http_content($r) // '') {
        next if /^#/;
        $m{$1} = $2 + 0 if /^(\S+) (\S+)$/;
    }
    return \%m;
}

my @m;
ok(wait_for(sub {
    @m = map { metrics($_) } @all;
    !grep { !defined $_ } @m
}), 'exporters answer');

is_deeply([map { $_->{nginxplus_up} } @m], [1, 1, 1], 'nginxplus_up 1');
is_deeply([map { $_->{nginxplus_stream_zone_sync_status_nodes_online} } @m],
    [2, 2, 2], 'nodes_online');

my $same = 1;
for my $n (@all) {
    my $st = api($n, '/stream/zone_sync/');
    for my $z (qw/one skv perip/) {
        for my $f (qw/records_total records_pending/) {
            my $metric = "nginxplus_stream_zone_sync_zone_${f}{zone=\"$z\"}";
            next if ($m[$n]{$metric} // -1) == $st->{zones}{$z}{$f};
            diag("node $n: $metric $m[$n]{$metric}, API $st->{zones}{$z}{$f}");
            $same = 0;
        }
    }
}
ok($same, 'per-zone records_total and records_pending equal the API');
is($m[0]{'nginxplus_stream_zone_sync_zone_records_total{zone="one"}'}, 201,
    'records_total of zone one');

is_deeply([map { $m[0]{"nginxplus_limit_request_${_}{zone=\"perip\"}"} }
    qw/passed rejected delayed/], [1, 4, 0], 'node 0: passed 1, rejected 4');
is_deeply([map { $m[$_]{'nginxplus_limit_request_rejected{zone="perip"}'} }
    1, 2], [1, 0], 'nodes 1 and 2: their own rejections');
ok($m[0]{nginxplus_connections_accepted} >= $conns2->{accepted},
    'connections_accepted from stub_status');
}

###############################################################################
