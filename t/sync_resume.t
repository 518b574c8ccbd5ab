#!/usr/bin/perl

# Resume (protocol version 2): after a reload, or a link that was down while
# records changed, two nodes exchange only what the other has not seen, not
# the whole zone.  Every fallback to a full snapshot is checked too, with
# its info line: a node restarted with empty zones, a position older than
# the zone can replay (a tombstone expired meanwhile), and a node of
# protocol version 1.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;
use Test::Nginx::SyncPeer;
use Test::Nginx::Util qw(wait_for);

###############################################################################

my $c = Test::Nginx::Cluster->new(2)->has(qw/http stream zone_sync/)
    ->plan(30);

my $conf = <<'EOF';

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen 127.0.0.1:@SYNC_PORT@;
        zone_sync;
        @SERVERS@
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 100ms;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone  zone=big:16m sync;
    keyval_zone  zone=tmo:1m timeout=2s sync;
    sync_limit_req_zone $http_x_key zone=slow:1m rate=1r/m sync;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;
        client_max_body_size 8m;
        client_body_buffer_size 8m;

        location /api/ {
            api write=on;
        }

        location /slow { sync_limit_req zone=slow burst=3 nodelay; empty_gif; }
    }
}

EOF

# "up": the mesh; "down": node 1 listens elsewhere and connects nowhere,
# so the link is cut both ways while its zones (shared memory) stay
my (%up, %down);
for my $i (0, 1) {
	my $up = $conf;
	$up =~ s/\@SYNC_PORT\@/%%NODE_SYNC%%/;
	$up =~ s/\@SERVERS\@/%%ALL_SYNC_SERVERS%%/;
	my $down = $conf;
	$down =~ s/\@SYNC_PORT\@/@{[ port(8095) ]}/;
	# a server nobody listens on
	$down =~ s/\@SERVERS\@/zone_sync_server 127.0.0.1:@{[ port(8097) ]};/;
	$c->write_file_expand($up);
	$up{$i} = $c->node($i)->read_file('nginx.conf');
	$c->write_file_expand($down);
	$down{$i} = $c->node($i)->read_file('nginx.conf');
}
$c->node($_)->write_file('nginx.conf', $up{$_}) for 0, 1;

$c->run();

###############################################################################

my $N = 20000;

sub api {
	my ($node, $method, $uri, $body) = @_;
	return http_json($c->http_port($node), $method, "/api/9$uri", $body);
}

sub zone {
	my ($node, $zone) = @_;
	my ($s, $d) = api($node, GET => "/http/keyvals/$zone");
	return $s == 200 ? $d : undef;
}

sub status {
	my ($s, $d) = api($_[0], GET => '/stream/zone_sync/');
	return $s == 200 ? $d->{status} : {};
}

sub online { return (status($_[0])->{nodes_online} // 0) == 1 }

sub same {
	my ($zone) = @_;
	my ($a, $b) = (zone(0, $zone), zone(1, $zone));
	return 0 unless $a && $b && keys %$a == keys %$b;
	for (keys %$a) { return 0 unless defined $b->{$_} && $b->{$_} eq $a->{$_} }
	return 1;
}

sub quiet {
	for my $i (0, 1) {
		my ($s, $d) = api($i, GET => '/stream/zone_sync/');
		return 0 unless $s == 200;
		return 0 if grep { $_->{records_pending} } values %{$d->{zones}};
	}
	return 1;
}

# bytes both nodes sent on sync connections while $code ran and the nodes
# converged after it
sub bytes_during {
	my ($code, $check) = @_;
	my @before = map { status($_)->{bytes_out} // 0 } 0, 1;
	$code->();
	my $ok = wait_for(sub { online(0) && online(1) && quiet() && $check->() },
		timeout => 20);
	# let positions and acknowledgements settle
	select undef, undef, undef, 0.3;
	my @after = map { status($_)->{bytes_out} // 0 } 0, 1;
	return ($ok, ($after[0] - $before[0]) + ($after[1] - $before[1]));
}

sub code {
	my ($i, $key) = @_;
	my $r = http("GET /slow HTTP/1.0\r\nHost: localhost\r\nX-Key: $key\r\n\r\n",
		port => $c->http_port($i)) // '';
	return $r =~ m!^HTTP/1\.. (\d+)! ? $1 : 0;
}

sub log_has {
	my ($node, $re) = @_;
	return wait_for(sub { $c->node($node)->read_file('error.log') =~ $re },
		timeout => 5);
}

###############################################################################

ok(wait_for(sub { online(0) && online(1) }), 'nodes connected');

my $json = '{' . join(',', map { qq{"key$_":"value-$_"} } 1 .. $N) . '}';
my ($st, $d) = api(0, POST => '/http/keyvals/big', $json);
is($st, 201, "$N records") or diag explain $d;
ok(wait_for(sub { keys %{zone(1, 'big') // {}} == $N }, timeout => 30),
	'in sync');

# what a full snapshot of the zone costs: the size of its records
my $full = 0;
$full += 27 + length($_) + length("value-x") for keys %{zone(0, 'big')};

# a reload of node 1: both directions resume, with nothing to send

my ($ok, $bytes) = bytes_during(sub { $c->reload_node(1) }, sub { same('big') });
ok($ok, 'converged after a reload');
cmp_ok($bytes, '<', $full / 20, "reload: $bytes bytes, a snapshot is $full");
ok(log_has(1, qr/resuming zone "big" for node/), 'reload: resumed (info)');

# the link down while 100 records change (some deleted) on either node

$c->node(1)->write_file('nginx.conf', $down{1});
$c->reload_node(1);
ok(wait_for(sub { !online(0) && !online(1) }), 'link down');

for my $i (1 .. 40) {
	api(0, PATCH => '/http/keyvals/big', qq{{"key$i":"changed-$i"}});
}
is(scalar(grep { (api(0, PATCH => '/http/keyvals/big', qq{{"key$_":null}}))[0]
	== 204 } 41 .. 60), 20, 'deleted while down');
for my $i (61 .. 100) {
	api(1, PATCH => '/http/keyvals/big', qq{{"key$i":"other-$i"}});
}
is(zone(0, 'big')->{key1}, 'changed-1', 'changed while down');
is(join(' ', map { code(0, 's') } 1 .. 4), '200 200 200 200',
	'limit_req: a burst on node 0 while down');
ok(!same('big'), 'nodes differ while down');

($ok, $bytes) = bytes_during(sub {
	$c->node(1)->write_file('nginx.conf', $up{1});
	$c->reload_node(1);
}, sub { same('big') });
ok($ok, 'converged after the link came back');
cmp_ok($bytes, '<', $full / 20, "link back: $bytes bytes, a snapshot is $full");
ok(!exists zone(1, 'big')->{key41}, 'delete resumed as a tombstone');
is(zone(0, 'big')->{key61}, 'other-61', 'change of node 1 resumed');
is(code(1, 's'), 503, "limit_req: node 0's share resumed to node 1");

# a tombstone expired while the link was down: the position is older than
# the zone can replay, so it gets a full snapshot

api(0, POST => '/http/keyvals/tmo', '{"t":"1"}');
ok(wait_for(sub { (zone(1, 'tmo') // {})->{t} }), 'timeout zone synced');
$c->node(1)->write_file('nginx.conf', $down{1});
$c->reload_node(1);
ok(wait_for(sub { !online(0) && !online(1) }), 'link down again');
api(0, PATCH => '/http/keyvals/tmo', '{"t":null}');
select undef, undef, undef, 3.5;
$c->node(1)->write_file('nginx.conf', $up{1});
$c->reload_node(1);
ok(log_has(0, qr/full snapshot of zone "tmo" for node \S+: its position \d+ is older than the zone can replay/),
	'expired tombstone: full snapshot (info)');
ok(wait_for(sub { online(0) && online(1) && same('big') }), 'converged');

# node 1 restarts with empty zones: it holds no position, and node 0 sees a
# new epoch of its zones; both get full snapshots

$c->stop_node(1);
$c->start_node(1);
($ok) = bytes_during(sub {}, sub { same('big') });
ok($ok, 'restarted node caught up');
ok(log_has(0, qr/full snapshot of zone "big" for node \S+: it holds no position in it/),
	'restart: full snapshot to it (info)');
ok(log_has(1, qr/full snapshot of zone "big" for node \S+: it holds no position in it/),
	'restart: full snapshot from it (info)');

# node 0's zone re-created by a reload with another size: a new epoch, so
# node 1's position in it is of another history

my $resized = $c->node(0)->read_file('nginx.conf');
$resized =~ s/zone=big:16m/zone=big:17m/;
$c->node(0)->write_file('nginx.conf', $resized);
$c->reload_node(0);
ok(log_has(0, qr/full snapshot of zone "big" for node \S+: its position is in another history/),
	'zone re-created: full snapshot (info)');
ok(wait_for(sub { online(0) && online(1) && same('big') }, timeout => 20),
	'converged after the zone was re-created');

# writes on node 1 while it reloads, three times: the old and the new
# worker 0 share the zone's change queue, and no change may be lost
# between them (one must not acknowledge a position past changes the
# other took)

my $pid = fork();
die "fork: $!" unless defined $pid;
if ($pid == 0) {
	api(1, PATCH => '/http/keyvals/big', qq{{"key$_":"reload-$_"}}) for 101 .. 400;
	exit 0;
}
$c->reload_node(1) for 1 .. 3;
waitpid($pid, 0);
ok(wait_for(sub { online(0) && online(1) && same('big')
		&& zone(0, 'big')->{key400} eq 'reload-400' }, timeout => 20),
	'writes during reloads: every change reached the peer');

# a node of protocol version 1: it refuses our HELLO, we speak version 1
# to it, and it gets a full snapshot

my $old = Test::Nginx::SyncPeer->listen('127.0.0.1:' . port(8096));
my $v1 = $c->node(0)->read_file('nginx.conf');
$v1 =~ s/(zone_sync;)/$1\n        zone_sync_server 127.0.0.1:${\ port(8096) };/;
$c->node(0)->write_file('nginx.conf', $v1);
$c->reload_node(0);
is($old->accept(v1_only => 1, zones => [ [ 'big', 1, 1 ] ]), 'refused',
	'version 2 offered first, refused');
my $p = $old->accept(v1_only => 1, zones => [ [ 'big', 1, 1 ] ]);
is(ref $p && $p->hello->{version}, 1, 'then version 1');
my $snap = ref $p && $p->snapshot(20);
cmp_ok(scalar @{$snap // []}, ">=", scalar keys %{zone(0, "big")},
	'version 1: full snapshot');
ok(log_has(0, qr/node \S+ speaks protocol version 1: sending full snapshots/),
	'version 1 logged (info)');

###############################################################################
