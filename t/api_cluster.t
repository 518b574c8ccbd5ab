#!/usr/bin/perl

# The REST API on a live 3-node cluster: keyval writes made through the API
# on one node (POST, PATCH, PATCH null, expire, DELETE; http and stream)
# show through GET on the others; /stream/zone_sync/ counters move with
# traffic, nodes_online is N-1 whichever worker answers and drops when a
# node stops, records_pending returns to 0 and records_total agrees.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;

###############################################################################

my $c = Test::Nginx::Cluster->new(3)->has(qw/http stream zone_sync/)
    ->plan(51);

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
    keyval_zone  zone=tmo:1m timeout=1h sync;
    keyval_zone  zone=local:1m;
    keyval       $arg_k $kv zone=one;

    server {
        listen 127.0.0.1:%%NODE_HTTP%% reuseport;

        location /api/ {
            api write=on;
        }

        location /set {
            set $kv $arg_v;
            return 200 "set";
        }
    }
}

EOF

$c->run();

###############################################################################

my @all = (0 .. 2);

sub api {
    my ($node, $method, $uri, $body) = @_;
    return http_json($c->http_port($node), $method, "/api/9$uri", $body);
}

sub zone {
    my ($node, $zone, $ns) = @_;
    $ns //= 'http';
    my ($s, $d) = api($node, GET => "/$ns/keyvals/$zone");
    return $s == 200 ? $d : undef;
}

sub sync_status {
    my ($node) = @_;
    my ($s, $d) = api($node, GET => '/stream/zone_sync/');
    return $s == 200 ? $d : undef;
}

sub online {
    my ($node) = @_;
    my $st = sync_status($node) or return -1;
    return $st->{status}{nodes_online};
}

# waits until $check->($node) holds on each of @nodes
sub on_all {
    my ($check, @nodes) = @_;
    @nodes = @all unless @nodes;
    return wait_for(sub {
        for my $n (@nodes) { return 0 unless $check->($n) }
        return 1;
    }, timeout => 10);
}

sub has_kv {
    my ($zone, $key, $value, $ns) = @_;
    return sub {
        my $z = zone($_[0], $zone, $ns) or return 0;
        return defined $value
            ? (defined $z->{$key} && $z->{$key} eq $value) : !exists $z->{$key};
    };
}

sub pending_zero {
    my $st = sync_status($_[0]) or return 0;
    return !grep { $_->{records_pending} != 0 } values %{$st->{zones}};
}

###############################################################################

# membership

ok(on_all(sub { online($_[0]) == 2 }), 'nodes_online is 2 on every node');

my $st = sync_status(0);
is_deeply([sort keys %{$st->{status}}],
    [qw/bytes_in bytes_out msgs_in msgs_out nodes_online/], 'status members');
is_deeply([sort keys %{$st->{zones}}], [qw/one skv tmo/],
    'synced zones listed, the local one not');
is_deeply([sort keys %{$st->{zones}{one}}],
    [qw/records_pending records_total/], 'zone members');
is_deeply((api(0, GET => '/stream/'))[1],
    [qw/server_zones limit_conns keyvals zone_sync upstreams/],
    'stream endpoints list zone_sync');
is_deeply((api(0, GET => '/stream/zone_sync/?fields=zones'))[1],
    { zones => $st->{zones} }, 'zone_sync fields');

# whichever worker answers

my (%pids, %online);
for (1 .. 30) {
    my ($s, $d) = api(1, GET => '/nginx?fields=pid');
    $pids{$d->{pid}}++ if $s == 200;
    $online{online(1)}++;
}
is(scalar(keys %pids), 2, 'requests reached both workers')
    or diag(explain(\%pids));
is_deeply(\%online, { 2 => 30 }, 'every worker reports nodes_online 2');

# POST on node 0, seen on 1 and 2; counters move

my @before = map { sync_status($_)->{status} } @all;

is((api(0, POST => '/http/keyvals/one', '{"a":"1"}'))[0], 201, 'POST node 0');
ok(on_all(has_kv('one', 'a', '1')), 'POST seen on every node');
ok(on_all(\&pending_zero), 'records_pending back to 0 everywhere');
ok(on_all(sub { sync_status($_[0])->{zones}{one}{records_total} == 1 }),
    'records_total 1 everywhere');

my @after = map { sync_status($_)->{status} } @all;
ok($after[0]{msgs_out} > $before[0]{msgs_out}, 'node 0 msgs_out moved');
ok($after[0]{bytes_out} > $before[0]{bytes_out}, 'node 0 bytes_out moved');
ok($after[1]{msgs_in} > $before[1]{msgs_in}, 'node 1 msgs_in moved');
ok($after[2]{bytes_in} > $before[2]{bytes_in}, 'node 2 bytes_in moved');

is((api(1, POST => '/http/keyvals/one', '{"a":"2"}'))[1]{error}{code},
    'KeyvalKeyExists', 'POST of a replicated key is 409 on node 1');

# several keys into an empty zone, with expire

is((api(1, POST => '/http/keyvals/tmo',
    '{"x":"1","y":{"value":"2","expire":3600000},"z":"3"}'))[0], 201,
    'POST several on node 1');
ok(on_all(has_kv('tmo', 'z', '3')), 'several keys seen everywhere');
is_deeply(zone(2, 'tmo'), { x => 1, y => 2, z => 3 }, 'node 2 has all three');

# PATCH

is((api(2, PATCH => '/http/keyvals/one', '{"a":"changed"}'))[0], 204,
    'PATCH node 2');
ok(on_all(has_kv('one', 'a', 'changed')), 'PATCH seen everywhere');
is((api(0, PATCH => '/http/keyvals/tmo',
    '{"y":{"value":"22","expire":3600000}}'))[0], 204,
    'PATCH value and expire node 0');
ok(on_all(has_kv('tmo', 'y', '22')), 'PATCH value and expire seen');
is((api(1, PATCH => '/http/keyvals/tmo', '{"x":{"expire":300}}'))[0], 204,
    'PATCH expire node 1');
ok(on_all(has_kv('tmo', 'x', undef)), 'expired everywhere');
ok(on_all(has_kv('tmo', 'z', '3')), 'others kept everywhere');

is((api(1, PATCH => '/http/keyvals/one', '{"a":null}'))[0], 204,
    'PATCH null node 1');
ok(on_all(has_kv('one', 'a', undef)), 'PATCH null seen everywhere');
is((api(2, PATCH => '/http/keyvals/one', '{"a":"x"}'))[1]{error}{code},
    'KeyvalKeyNotFound', 'PATCH of a replicated delete is 404 on node 2');

# DELETE

is((api(2, DELETE => '/http/keyvals/tmo'))[0], 204, 'DELETE node 2');
ok(on_all(sub { my $z = zone($_[0], 'tmo'); $z && !%$z }),
    'DELETE seen everywhere');
is((api(0, POST => '/http/keyvals/tmo', '{"p":"1","q":"2"}'))[0], 201,
    'zone empty everywhere: POST several again on node 0');
ok(on_all(has_kv('tmo', 'q', '2')), 'POST several again seen everywhere');

# variable writes and API reads across nodes

http_get('/set?k=fromvar&v=hello', port => $c->http_port(1));
ok(on_all(has_kv('one', 'fromvar', 'hello')),
    'variable write on node 1 seen through the API everywhere');

# stream keyvals

is((api(2, POST => '/stream/keyvals/skv', '{"10.0.0.1":"s"}'))[0], 201,
    'stream POST node 2');
ok(on_all(has_kv('skv', '10.0.0.1', 's', 'stream')),
    'stream POST seen everywhere');
is((api(0, PATCH => '/stream/keyvals/skv', '{"10.0.0.1":null}'))[0], 204,
    'stream PATCH null node 0');
ok(on_all(has_kv('skv', '10.0.0.1', undef, 'stream')),
    'stream delete seen everywhere');

# a zone without sync stays local

is((api(0, POST => '/http/keyvals/local', '{"l":"1"}'))[0], 201,
    'POST into local zone');
api(0, POST => '/http/keyvals/one', '{"marker":"1"}');
ok(on_all(has_kv('one', 'marker', '1')), 'later synced write arrived');
is_deeply(zone(1, 'local'), {}, 'local zone not synced');

# quiet cluster: nothing pending, same totals

ok(on_all(\&pending_zero), 'records_pending 0 everywhere');
my @totals = map { my $s = sync_status($_); join ',',
    map { "$_=$s->{zones}{$_}{records_total}" } sort keys %{$s->{zones}} } @all;
is($totals[1], $totals[0], 'node 1 records_total as node 0');
is($totals[2], $totals[0], 'node 2 records_total as node 0');

# a node stops: nodes_online drops; back: it catches up

$c->stop_node(2);
ok(on_all(sub { online($_[0]) == 1 }, 0, 1), 'nodes_online 1 after a stop');

is((api(0, POST => '/http/keyvals/one', '{"while-down":"1"}'))[0], 201,
    'POST while node 2 is down');
ok(on_all(has_kv('one', 'while-down', '1'), 0, 1), 'seen on node 1');

$c->start_node(2);
ok(on_all(sub { online($_[0]) == 2 }), 'nodes_online 2 again');
ok(on_all(has_kv('one', 'while-down', '1')), 'node 2 caught up');
ok(on_all(\&pending_zero), 'records_pending 0 again');

###############################################################################
