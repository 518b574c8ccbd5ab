#!/usr/bin/perl

# keyval_zone state=file: the file has the API's GET shape and is written
# within seconds of a change; a restart keeps every record (http, stream,
# type=ip) with its remaining lifetime; kill -9 loses at most the last
# seconds; truncated and corrupt files are reported with the position,
# moved aside (never overwritten) and the zone starts empty; a Plus-style
# {"key":"value"} file loads; nginx -t refuses a directory that cannot be
# written; with sync, a node that was down while the others changed the
# zone loads its file and still ends up with the cluster's newer data.

use strict;
use warnings;

use Test::More;
use JSON::PP;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;

###############################################################################

my $t = Test::Nginx->new()->has(qw/http stream zone_sync/);
my $c = Test::Nginx::Cluster->new(2);
$t->plan(38);

my $dir = $t->testdir();
mkdir "$dir/state";
chmod 0777, "$dir/state";

my $conf = <<'EOF';

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%
    keyval_zone zone=sst:1m state=%%TESTDIR%%/state/sst.json;
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=st:1m state=%%TESTDIR%%/state/st.json;
    keyval_zone zone=tm:1m state=%%TESTDIR%%/state/tm.json timeout=1h;
    keyval_zone zone=ipz:1m type=ip state=%%TESTDIR%%/state/ip.json;
    keyval $arg_ip $ipv zone=ipz;

    server {
        listen 127.0.0.1:8080;

        location /ip { return 200 "[$ipv]"; }
        location /api/ { api write=on; }
    }
}

EOF

$t->write_file_expand('nginx.conf', $conf);
$t->run();

###############################################################################

my $json = JSON::PP->new->utf8->canonical;

sub api {
	my ($method, $uri, $body) = @_;
	return http_json($t, $method, "/api/9$uri", $body);
}

sub zone {
	my ($ns, $z) = @_;
	return (api(GET => "/$ns/keyvals/$z"))[1];
}

sub state {
	my ($name, $base) = @_;
	$base //= "$dir/state";
	open my $fh, '<', "$base/$name" or return undef;
	local $/;
	my $text = <$fh>;
	return eval { $json->decode($text) };
}

sub put_file {
	my ($name, $content) = @_;
	open my $fh, '>', "$dir/state/$name" or die "$name: $!";
	print $fh $content;
	close $fh;
}

sub log_has {
	my ($re) = @_;
	return $t->read_file('error.log') =~ $re;
}

api(POST => '/http/keyvals/st', '{"a":"1"}');
api(POST => '/http/keyvals/st', '{"b":"two words"}');
api(POST => '/http/keyvals/tm', '{"y":"long"}');
api(POST => '/http/keyvals/tm', '{"x":{"value":"short","expire":6000}}');
api(POST => '/http/keyvals/ipz', '{"10.0.0.0/8":"ten"}');
api(POST => '/stream/keyvals/sst', '{"s":"stream"}');

ok(wait_for(sub { my $s = state('st.json'); $s && keys %$s == 2 }, timeout => 5),
	'worker 0 writes the file within seconds of a change');
is_deeply(state('st.json'), { a => '1', b => 'two words' },
	'records without expiry: the GET shape');

ok(wait_for(sub { my $s = state('tm.json'); $s && $s->{x} }, timeout => 5),
	'zone with timeout written');
my $tm = state('tm.json');
ok($tm->{y}{value} eq 'long' && $tm->{y}{expire} > 3_590_000
	&& $tm->{y}{expire} <= 3_600_000 && $tm->{y}{expire_at} > 0,
	'an expiring record: value, expire (ms left) and expire_at');
ok($tm->{x}{expire} <= 6000, 'API expire kept');

ok(wait_for(sub { my $s = state('ip.json'); $s && $s->{'10.0.0.0/8'} },
	timeout => 5), 'type=ip keys written as text');
ok(wait_for(sub { my $s = state('sst.json'); $s && $s->{s} }, timeout => 5),
	'stream zone written');

# restart: every record back, lifetimes continue

my $before = $tm->{y}{expire_at};

$t->stop_nginx();
# let time pass, so that a lifetime restarted at load would show
select undef, undef, undef, 2;
$t->run();

is_deeply(zone(http => 'st'), { a => '1', b => 'two words' },
	'restart: http zone back');
is_deeply(zone(stream => 'sst'), { s => 'stream' }, 'restart: stream zone back');
is_deeply(zone(http => 'tm'), { x => 'short', y => 'long' },
	'restart: zone with timeout back');
like(http_get('/ip?ip=10.20.30.40'), qr/\[ten\]/,
	'restart: type=ip network matches');
ok(log_has(qr/keyval zone "st": 2 records loaded from state file/),
	'records loaded: logged');

$t->stop_nginx();
is(abs(state('tm.json')->{y}{expire_at} - $before) < 1000, 1,
	'the remaining lifetime carried over the restart');
$t->run();

ok(wait_for(sub { !exists zone(http => 'tm')->{x} }, timeout => 15),
	'a record still expires after the restart');

# kill -9: at most the last seconds lost

api(POST => '/http/keyvals/st', '{"c":"3"}');
my $start = time();
ok(wait_for(sub { my $s = state('st.json'); $s && $s->{c} }, timeout => 5),
	'the change reaches the file within 5 s');
$t->kill_nginx('KILL');
$t->run();
is(zone(http => 'st')->{c}, '3', 'kill -9 of master and workers: the record survives');

# a truncated file

$t->stop_nginx();
put_file('st.json', '{"a":"1","b":');
$t->run();

is_deeply(zone(http => 'st'), {}, 'truncated file: the zone starts empty');
ok(log_has(qr/\[error\].*keyval zone "st": state file "\Q$dir\E\/state\/st\.json" is invalid: unexpected end of data at offset 13; the zone starts empty, the file was moved to "\Q$dir\E\/state\/st\.json\.bad-\d+"/),
	'truncated file: error with the file, the position and where it went');
my @bad = glob("$dir/state/st.json.bad-*");
is(scalar @bad, 1, 'truncated file: moved aside');
is($t->read_file("state/" . ($bad[0] =~ s{.*/}{}r)), '{"a":"1","b":',
	'truncated file: kept as it was');

# a corrupt file: the first bad file is not overwritten

$t->stop_nginx();
put_file('st.json', "{\"a\":\"1\"}\n\x00garbage");
$t->run();

is_deeply(zone(http => 'st'), {}, 'corrupt file: the zone starts empty');
ok(log_has(qr/state file "[^"]*st\.json" is invalid: trailing data after the value at offset 10/),
	'corrupt file: error with the position');
@bad = glob("$dir/state/st.json.bad-*");
is(scalar @bad, 2, 'two bad files kept side by side');

# a file as NGINX Plus (or a person) writes it

$t->stop_nginx();
put_file('st.json', '{"p":"plus", "n":5, "e":{"value":"v","expire":60000}}');
$t->run();

is_deeply(zone(http => 'st'), { p => 'plus', n => '5', e => 'v' },
	'a Plus-style file loads');

# reloads: a new size makes a new zone, filled from the file the master
# writes first; a new type is refused

my $was = zone(http => 'st');
(my $bigger = $conf) =~ s/zone=st:1m/zone=st:2m/;
$t->write_file_expand('nginx.conf', $bigger);
ok($t->reload(wait_old => 1), 'reload with a new zone size');
is_deeply(zone(http => 'st'), $was, 'the records moved to the new zone');

$t->ignore_log(qr/cannot change to type=prefix on reload/);
(my $retyped = $bigger) =~ s/zone=ipz:1m type=ip/zone=ipz:1m type=prefix/;
$t->write_file_expand('nginx.conf', $retyped);
ok(!$t->reload() && log_has(qr/\[emerg\].*keyval zone "ipz" has type=ip and cannot change to type=prefix on reload/),
	'reload with a new type refused');
$t->write_file_expand('nginx.conf', $bigger);

# a directory that stops being writable: one error, then back to normal

SKIP: {
	skip 'not root: workers run as this user', 3 if $> != 0;

	chmod 0755, "$dir/state";
	api(POST => '/http/keyvals/st', '{"w1":"1"}');
	ok(wait_for(sub { log_has(qr/\[error\].*keyval zone "st": could not write state file "[^"]*st\.json": Permission denied/) },
		timeout => 5), 'unwritable directory: the failed write is logged');
	api(POST => '/http/keyvals/st', '{"w2":"2"}');
	# two more writes are attempted meanwhile (one a second)
	select undef, undef, undef, 2.5;
	my @lines = $t->read_file('error.log') =~ /zone "st": could not write state file/g;
	is(scalar @lines, 1, 'unwritable directory: logged once');

	chmod 0777, "$dir/state";
	api(POST => '/http/keyvals/st', '{"w3":"3"}');
	ok(wait_for(sub { my $s = state('st.json'); $s && $s->{w3} }, timeout => 5),
		'writable again: the file is written');
}

# nginx -t and a directory that cannot be written

$t->write_file_expand('nodir.conf', <<'EOF');
%%TEST_GLOBALS%%
events {
}
http {
    keyval_zone zone=st:1m state=%%TESTDIR%%/missing/st.json;
}
EOF
my ($code, $out) = $t->test_config('nodir.conf');
ok($code != 0 && $out =~ /state file "[^"]*\/missing\/st\.json" cannot be written: directory "[^"]*\/missing": No such file or directory/,
	'nginx -t: missing directory refused');

SKIP: {
	skip 'not root: workers run as this user', 1 if $> != 0;

	mkdir "$dir/rootonly";
	chmod 0755, "$dir/rootonly";
	$t->write_file_expand('rootonly.conf', <<'EOF');
%%TEST_GLOBALS%%
events {
}
http {
    keyval_zone zone=st:1m state=%%TESTDIR%%/rootonly/st.json;
}
EOF
	($code, $out) = $t->test_config('rootonly.conf');
	ok($code != 0 && $out =~ /directory "[^"]*\/rootonly" is not writable by user "nobody"/,
		'nginx -t: directory the workers cannot write refused');
}

$t->stop();

###############################################################################

# state and sync: node 1 is down while node 0 changes the zone

$c->write_file_expand(<<'EOF');

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
        %%ALL_SYNC_SERVERS%%
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 200ms;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=cs:1m state=%%TESTDIR%%/cs.json sync;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;
        location /api/ { api write=on; }
    }
}

EOF

$c->run();

sub capi {
	my ($node, $method, $uri, $body) = @_;
	return http_json($c->http_port($node), $method, "/api/9$uri", $body);
}

sub cs {
	my ($node) = @_;
	return (capi($node, GET => '/http/keyvals/cs'))[1] // {};
}

capi(0, POST => '/http/keyvals/cs', '{"k1":"old","k2":"doomed","k4":"same"}');
ok(wait_for(sub { keys %{cs(1)} == 3 }, timeout => 10), 'cluster: synced');
ok(wait_for(sub {
	my $s = state('cs.json', $c->node(1)->testdir());
	$s && keys %$s == 3 && $s->{k1}{hlc} && $s->{k1}{origin}
}, timeout => 5), 'cluster: node 1 wrote its file, with versions');

$c->stop_node(1);

capi(0, PATCH => '/http/keyvals/cs', '{"k1":"new"}');
capi(0, PATCH => '/http/keyvals/cs', '{"k2":null}');
capi(0, POST => '/http/keyvals/cs', '{"k3":"added"}');

$c->start_node(1);

my $want = { k1 => 'new', k3 => 'added', k4 => 'same' };
ok(wait_for(sub { $json->encode(cs(1)) eq $json->encode($want) }, timeout => 10),
	'cluster: the node that was down ends up with the newer data')
	or diag explain cs(1);
is_deeply(cs(0), $want, 'cluster: its older file did not overwrite node 0');
ok($c->node(1)->read_file('error.log')
	=~ /keyval zone "cs": 3 records loaded from state file/,
	'cluster: node 1 loaded its file');

# Plus-style files (no versions) with one key, different values: the
# nodes still settle on one value

$c->stop_node($_) for 0, 1;
for my $i (0, 1) {
	open my $fh, '>', $c->node($i)->testdir() . '/cs.json' or die $!;
	print $fh qq{{"tie":"from$i"}};
	close $fh;
}
$c->start_node($_) for 0, 1;
ok(wait_for(sub {
	my ($a, $b) = (cs(0)->{tie} // '', cs(1)->{tie} // '');
	$a ne '' && $a eq $b
}, timeout => 10), 'cluster: unversioned files, one value everywhere');

$c->stop();

###############################################################################
